//! Field validators a model router applies to `create` and `update` data.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// A custom check: the message to show, or nothing.
pub type CheckFn = dyn Fn(&Value) -> Result<(), String> + Send + Sync;

/// A check on one field's new value. Failing checks become `validation` details.
#[derive(Clone)]
pub enum Validator {
    /// String length in characters, inclusive.
    Length {
        /// The fewest characters allowed (1: may not be empty).
        min: usize,
        /// The most characters allowed.
        max: usize,
    },
    /// Number range, inclusive.
    Range {
        /// The smallest value allowed.
        min: f64,
        /// The largest value allowed.
        max: f64,
    },
    /// Anything else: return the message to show.
    Custom(Arc<CheckFn>),
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validator::Length { min, max } => write!(f, "Length({min}..={max})"),
            Validator::Range { min, max } => write!(f, "Range({min}..={max})"),
            Validator::Custom(_) => write!(f, "Custom"),
        }
    }
}

impl Validator {
    /// Strings of `min` to `max` characters, inclusive.
    pub fn length(min: usize, max: usize) -> Self {
        Validator::Length { min, max }
    }

    /// Numbers from `min` to `max`, inclusive (`Validator::range(1.0, 5.0)` for a rating).
    ///
    /// # Panics
    ///
    /// If `min` is greater than `max` or either is NaN: no value could pass.
    #[track_caller]
    pub fn range(min: f64, max: f64) -> Self {
        assert!(
            min <= max,
            "Validator::range({min}, {max}): min must be at most max"
        );
        Validator::Range { min, max }
    }

    /// A check of your own: `Err` holds the message to show for the field.
    pub fn custom(f: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Validator::Custom(Arc::new(f))
    }

    /// Checks a non-null value already known to be of the field's type.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match self {
            Validator::Length { min, max } => {
                let len = value.as_str().map_or(0, |s| s.chars().count());
                if len < *min {
                    Err(if *min == 1 {
                        "may not be empty".to_owned()
                    } else {
                        format!("must be at least {min} characters")
                    })
                } else if len > *max {
                    Err(format!("must be at most {max} characters"))
                } else {
                    Ok(())
                }
            }
            Validator::Range { min, max } => match value.as_f64() {
                Some(n) if n < *min || n > *max => Err(format!("must be between {min} and {max}")),
                _ => Ok(()),
            },
            Validator::Custom(f) => f(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Validator;

    #[test]
    fn range_is_inclusive_and_says_what_it_wants() {
        let v = Validator::range(1.0, 5.0);
        assert_eq!(v.check(&json!(1)), Ok(()));
        assert_eq!(v.check(&json!(5.0)), Ok(()));
        assert_eq!(v.check(&json!(3.5)), Ok(()));
        assert_eq!(
            v.check(&json!(0)),
            Err("must be between 1 and 5".to_owned())
        );
        assert_eq!(
            v.check(&json!(5.01)),
            Err("must be between 1 and 5".to_owned())
        );
    }

    #[test]
    #[should_panic(expected = "min must be at most max")]
    fn an_empty_range_is_refused_at_startup() {
        let _ = Validator::range(5.0, 1.0);
    }

    #[test]
    fn length_counts_characters() {
        let v = Validator::length(1, 3);
        assert_eq!(v.check(&json!("äöü")), Ok(()));
        assert_eq!(v.check(&json!("")), Err("may not be empty".to_owned()));
        assert_eq!(
            v.check(&json!("abcd")),
            Err("must be at most 3 characters".to_owned())
        );
    }
}
