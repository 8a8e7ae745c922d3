//! What a route's objects look like: field names, types, and what clients may do with each.
//!
//! Filters, ordering and data validation all read this one description.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// The type of a published field, as the filter language and validation see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// A JSON integer that fits an `i64`; `1.5` and `"3"` are not integers.
    Integer,
    /// Any JSON number, stored as `f64` (named `number` in error messages).
    Float,
    /// A JSON string, compared by Unicode code point; the only type `contains`, `icontains`
    /// and `startswith` apply to.
    Text,
    /// `true` or `false`: filterable by equality, never orderable.
    Bool,
    /// RFC 3339 strings on the wire, compared as instants.
    Timestamp,
    /// Any JSON; published but never filterable or orderable.
    Json,
}

impl FieldType {
    /// The type's name as error messages show it to clients (`integer`, `number`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Integer => "integer",
            FieldType::Float => "number",
            FieldType::Text => "string",
            FieldType::Bool => "boolean",
            FieldType::Timestamp => "timestamp (RFC 3339 string)",
            FieldType::Json => "JSON value",
        }
    }

    /// Reads a JSON value of this type strictly: `"3"` is no integer, `1` no boolean.
    /// `None` means the value does not fit (null included).
    pub fn scalar(self, value: &Value) -> Option<Scalar> {
        match (self, value) {
            (FieldType::Integer, Value::Number(n)) => n.as_i64().map(Scalar::Int),
            (FieldType::Float, Value::Number(n)) => n.as_f64().map(Scalar::Float),
            (FieldType::Text, Value::String(s)) => Some(Scalar::Text(s.clone())),
            (FieldType::Bool, Value::Bool(b)) => Some(Scalar::Bool(*b)),
            (FieldType::Timestamp, Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| Scalar::Time(t.with_timezone(&Utc))),
            _ => None,
        }
    }

    /// Whether `value` fits this type (null is checked separately against nullability).
    pub fn accepts(self, value: &Value) -> bool {
        self == FieldType::Json || self.scalar(value).is_some()
    }

    /// Whether `lt`/`lte`/`gt`/`gte` and ordering apply: every type but booleans and JSON.
    pub fn is_ordered(self) -> bool {
        !matches!(self, FieldType::Bool | FieldType::Json)
    }
}

/// A typed, non-null field value.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Scalar {
    /// A [`FieldType::Integer`] value.
    Int(i64),
    /// A [`FieldType::Float`] value.
    Float(f64),
    /// A [`FieldType::Text`] value.
    Text(String),
    /// A [`FieldType::Bool`] value.
    Bool(bool),
    /// A [`FieldType::Timestamp`] value, in UTC whatever offset it was written with.
    Time(DateTime<Utc>),
}

/// A hashable form of a [`Scalar`], for equality indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScalarKey {
    /// An integer, as is.
    Int(i64),
    /// A float's bit pattern, with `-0.0` folded into `0.0`.
    Float(u64),
    /// A string, as is.
    Text(String),
    /// A boolean, as is.
    Bool(bool),
    /// An instant: seconds since the Unix epoch and nanoseconds within the second.
    Time(i64, u32),
}

impl Scalar {
    /// The hashable form, equal for equal scalars (`-0.0` and `0.0` share a key).
    pub fn key(&self) -> ScalarKey {
        match self {
            Scalar::Int(v) => ScalarKey::Int(*v),
            // Normalise -0.0 to 0.0 so that equal numbers share a key.
            Scalar::Float(v) => ScalarKey::Float(if *v == 0.0 { 0 } else { v.to_bits() }),
            Scalar::Text(v) => ScalarKey::Text(v.clone()),
            Scalar::Bool(v) => ScalarKey::Bool(*v),
            Scalar::Time(t) => ScalarKey::Time(t.timestamp(), t.timestamp_subsec_nanos()),
        }
    }

    /// The database value this scalar binds as.
    pub fn to_db(&self) -> sea_orm::Value {
        match self {
            Scalar::Int(v) => (*v).into(),
            Scalar::Float(v) => (*v).into(),
            Scalar::Text(v) => v.clone().into(),
            Scalar::Bool(v) => (*v).into(),
            Scalar::Time(t) => (*t).into(),
        }
    }

    /// The value as published on the wire; timestamps as RFC 3339 in UTC with a `Z`.
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Int(v) => Value::from(*v),
            Scalar::Float(v) => Value::from(*v),
            Scalar::Text(v) => Value::from(v.clone()),
            Scalar::Bool(v) => Value::from(*v),
            Scalar::Time(t) => Value::from(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

/// One published field of a route.
#[derive(Debug, Clone)]
pub struct Field {
    /// The field's name, as published and as filters name it.
    pub name: String,
    /// What values it holds, and so which operators apply to it.
    pub ty: FieldType,
    /// Whether it may be null; a null fails every comparison but `isnull`.
    pub nullable: bool,
    /// Whether clients may name it in a filter; otherwise their filter is `bad_request`.
    pub filterable: bool,
    /// Whether clients may order lists by it.
    pub orderable: bool,
}

/// The published fields of a route, in publishing order.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    fields: Vec<Field>,
}

impl Schema {
    /// A schema of exactly these fields, in this order.
    pub fn new(fields: Vec<Field>) -> Self {
        Schema { fields }
    }

    /// The published field called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The published field called `name`, to change its flags (a scope's schema makes every
    /// field filterable).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Field> {
        self.fields.iter_mut().find(|f| f.name == name)
    }

    /// Every published field, in publishing order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// A schema for custom events: every field is any JSON type, all filterable.
    /// Fields are added as they are named; see [`Schema::field`].
    pub fn field(mut self, name: &str, ty: FieldType, nullable: bool) -> Self {
        self.fields.push(Field {
            name: name.to_owned(),
            ty,
            nullable,
            filterable: ty != FieldType::Json,
            orderable: ty.is_ordered(),
        });
        self
    }
}

/// Unicode lower-casing used on both sides of `icontains`, in memory and in SQLite
/// (PostgreSQL's `lower()` in a UTF-8 locale maps the same code points).
pub fn fold_case(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}
