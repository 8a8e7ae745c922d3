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
