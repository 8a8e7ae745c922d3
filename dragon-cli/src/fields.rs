//! `name:type[?]` field specs of `dragon generate model`, and what each type becomes in the
//! model, the migration, the router and the generated test.

use serde::Serialize;

use crate::CliError;
use crate::names;

/// What one field type of `dragon generate model` becomes.
struct Kind {
    /// As written in a spec (`title:string`).
    name: &'static str,
    /// The Rust type in the model.
    rust: &'static str,
    /// `#[sea_orm(...)]` contents, if any.
    attr: &'static str,
    /// The sea-orm-migration column function.
    column: &'static str,
    /// Two JSON values for the generated test: one to create, one to update.
    samples: [&'static str; 2],
}

/// The field types `dragon generate model` knows, in the order help texts list them.
const KINDS: &[Kind] = &[
    Kind {
        name: "string",
        rust: "String",
        attr: "",
        column: "string",
        samples: [r#""a string""#, r#""another string""#],
    },
    Kind {
        name: "text",
        rust: "String",
        attr: r#"column_type = "Text""#,
        column: "text",
        samples: [r#""some text""#, r#""other text""#],
    },
    Kind {
        name: "int",
        rust: "i32",
        attr: "",
        column: "integer",
        samples: ["42", "7"],
    },
    Kind {
        name: "bigint",
        rust: "i64",
        attr: "",
        column: "big_integer",
        samples: ["42", "7"],
    },
    Kind {
        name: "float",
        rust: "f64",
        attr: "",
        column: "double",
        samples: ["1.5", "2.5"],
    },
    Kind {
        name: "bool",
        rust: "bool",
        attr: "",
        column: "boolean",
        samples: ["true", "false"],
    },
    Kind {
        name: "datetime",
        rust: "ChronoDateTimeUtc",
        attr: "",
        column: "timestamp_with_time_zone",
        samples: [r#""2026-01-02T03:04:05Z""#, r#""2026-02-03T04:05:06Z""#],
    },
    Kind {
        name: "uuid",
        rust: "Uuid",
        attr: "",
        column: "uuid",
        samples: [
            r#""67e55044-10b1-426f-9247-bb680e5fe0c8""#,
            r#""5f8d3c0e-7a4b-4a5e-9d1c-2b3a4c5d6e7f""#,
        ],
    },
    Kind {
        name: "json",
        rust: "Json",
        attr: r#"column_type = "JsonBinary""#,
        column: "json_binary",
        samples: [r#"{"a": 1}"#, r#"{"b": 2}"#],
    },
];

/// The known types, for messages: `string, text, int, ...`.
fn type_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// One field of a generated model.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub name: String,
    pub ty: String,
    pub optional: bool,
    /// The Rust type in the model.
    pub rust: String,
    /// `#[sea_orm(...)]` contents, if any.
    pub attr: String,
    /// The sea-orm-migration column function (`string`, `text_null`, ...).
    pub column: String,
    /// Chained after the column (`.default(false)`).
    pub column_extra: String,
    /// A JSON value for the generated test, and another for its update.
    pub sample: String,
    pub other_sample: String,
}

impl Field {
    /// Dragon can filter and order on it (JSON and UUID fields are opaque to filters).
    pub fn scalar(&self) -> bool {
        !matches!(self.ty.as_str(), "json" | "uuid")
    }

    /// Set by the server, never by clients: `created_at` of type `datetime`.
    pub fn server_set(&self) -> bool {
        self.name == "created_at" && self.ty == "datetime"
    }

    /// A length check for string fields: (min, max).
    pub fn length(&self) -> Option<(usize, usize)> {
        let max = match self.ty.as_str() {
            "string" => 255,
            "text" => 100_000,
            _ => return None,
        };
        Some((usize::from(!self.optional), max))
    }
}

/// Parses `title:string`, `due:datetime?` and the like.
pub fn parse(spec: &str) -> Result<Field, CliError> {
    let (name, ty) = spec.split_once(':').ok_or_else(|| {
        CliError::Usage(format!(
            "field {spec:?} must be name:type, e.g. title:string (types: {})",
            type_names()
        ))
    })?;
    names::ident("field", name)?;
    if name == "id" {
        return Err(CliError::Usage(
            "`id` is added to every model; do not list it".into(),
        ));
    }
    let (ty, optional) = match ty.strip_suffix('?') {
        Some(t) => (t, true),
        None => (ty, false),
    };
    let kind = KINDS.iter().find(|k| k.name == ty).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown field type {ty:?} in {spec:?}; types: {}",
            type_names()
        ))
    })?;
    // Booleans default to false, so clients need not send them.
    let defaulted = ty == "bool" && !optional;
    let mut attrs: Vec<&str> = Vec::new();
    if !kind.attr.is_empty() {
        attrs.push(kind.attr);
    }
    if defaulted {
        attrs.push("default_value = false");
    }
    let [sample, other_sample] = kind.samples;
    Ok(Field {
        name: name.to_owned(),
        ty: ty.to_owned(),
        optional,
        rust: if optional {
            format!("Option<{}>", kind.rust)
        } else {
            kind.rust.to_owned()
        },
        attr: attrs.join(", "),
        column: if optional {
            format!("{}_null", kind.column)
        } else {
            kind.column.to_owned()
        },
        column_extra: if defaulted {
            ".default(false)".to_owned()
        } else {
            String::new()
        },
        sample: sample.to_owned(),
        other_sample: other_sample.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let f = parse("due:datetime?").unwrap();
        assert_eq!(f.rust, "Option<ChronoDateTimeUtc>");
        assert_eq!(f.column, "timestamp_with_time_zone_null");
        assert!(
            parse("done:bool")
                .unwrap()
                .attr
                .contains("default_value = false")
        );
        for bad in [
            "title",
            "title:str",
            "Title:string",
            "id:int",
            "type:string",
            ":string",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
