//! The filter language (protocol section 4): one predicate for queries and live subscriptions.
//!
//! A filter is parsed once against a route's [`Schema`] into a [`Filter`]; it is then evaluated
//! in memory by [`Filter::matches`] (`eval.rs`) and translated to SQL by [`Filter::to_condition`]
//! (`sql.rs`). Those two are the only places that give operators their meaning.

mod eval;
mod sql;

pub use sql::SQLITE_LOWER_FN;
pub(crate) use sql::ordered_col;

use serde_json::{Map, Value};

use crate::error::Error;
use crate::schema::{FieldType, Scalar, ScalarKey, Schema};

/// A comparison operator (`field__op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `eq` (or a bare `field` key): equal.
    Eq,
    /// `ne`: not equal; false on a null field, like every comparison but `isnull`.
    Ne,
    /// `lt`: less than; ordered types only.
    Lt,
    /// `lte`: less than or equal; ordered types only.
    Lte,
    /// `gt`: greater than; ordered types only.
    Gt,
    /// `gte`: greater than or equal; ordered types only.
    Gte,
    /// `in`: equal to one of a list (`in: []` matches nothing).
    In,
    /// `contains`: the text contains the value, case-sensitively; text fields only.
    Contains,
    /// `icontains`: like `contains`, lower-casing both sides per code point
    /// (see [`crate::schema::fold_case`]).
    IContains,
    /// `startswith`: the text begins with the value, case-sensitively; text fields only.
    StartsWith,
    /// `isnull`: the field is null (`true`) or not (`false`); the only operator that sees nulls.
    IsNull,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            "contains" => Op::Contains,
            "icontains" => Op::IContains,
            "startswith" => Op::StartsWith,
            "isnull" => Op::IsNull,
            _ => return None,
        })
    }
}

/// The right-hand side of a comparison, already typed for its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// One value, for every operator but `in` and `isnull`.
    One(Scalar),
    /// `in`'s list.
    Many(Vec<Scalar>),
    /// `isnull`'s flag.
    Null(bool),
}

/// A parsed, validated filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// All hold (an empty list: everything matches).
    And(Vec<Filter>),
    /// Any holds (an empty list: nothing matches).
    Or(Vec<Filter>),
    /// Holds where the inner filter does not (`$not`); true where a comparison met a null.
    Not(Box<Filter>),
    /// One `field__op: value` comparison, with what the schema says of the field.
    Cmp {
        /// The published field compared.
        field: String,
        /// The field's type; the operand is already of it.
        ty: FieldType,
        /// Whether the field may be null: SQL then adds `IS NOT NULL` to keep two-valued logic.
        nullable: bool,
        /// The comparison (`eq` when the key has no `__op`).
        op: Op,
        /// The right-hand side, typed for `ty`.
        operand: Operand,
    },
}

impl Default for Filter {
    fn default() -> Self {
        Filter::And(Vec::new())
    }
}

impl Filter {
    /// Everything matches.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Parses a JSON filter (or `null`/absent: match all) against a schema, with no size
    /// limit: for filters the app writes (scopes, row rules). Clients' filters go through
    /// [`Filter::parse_limited`].
    pub fn parse(value: Option<&Value>, schema: &Schema) -> Result<Filter, Error> {
        Self::parse_limited(value, schema, &FilterLimits::UNLIMITED)
    }

    /// Parses a client's filter, refusing one over `limits` with `bad_request` naming the
    /// limit: every event is matched against every live filter, so their size is bounded.
    pub fn parse_limited(
        value: Option<&Value>,
        schema: &Schema,
        limits: &FilterLimits,
    ) -> Result<Filter, Error> {
        let mut parser = Parser {
            schema,
            limits,
            terms: 0,
        };
        match value {
            None | Some(Value::Null) => Ok(Filter::all()),
            Some(Value::Object(map)) => parser.object(map, 1),
            Some(_) => Err(Error::bad_request("filter must be an object")),
        }
    }

    /// Both must hold; used to force a router's scope onto a client's filter.
    pub fn and(self, other: Filter) -> Filter {
        match (self, other) {
            (Filter::And(a), other) if a.is_empty() => other,
            (this, Filter::And(b)) if b.is_empty() => this,
            (Filter::And(mut a), Filter::And(b)) => {
                a.extend(b);
                Filter::And(a)
            }
            (Filter::And(mut a), other) => {
                a.push(other);
                Filter::And(a)
            }
            (this, other) => Filter::And(vec![this, other]),
        }
    }

    /// The fields the filter reads.
    pub fn fields(&self) -> std::collections::BTreeSet<&str> {
        let mut out = std::collections::BTreeSet::new();
        let mut stack = vec![self];
        while let Some(f) = stack.pop() {
            match f {
                Filter::And(parts) | Filter::Or(parts) => stack.extend(parts),
                Filter::Not(inner) => stack.push(inner),
                Filter::Cmp { field, .. } => {
                    out.insert(field.as_str());
                }
            }
        }
        out
    }

    /// An equality the subscription index can look up instead of scanning: a top-level
    /// `field = v` or `field in [..]` that every matching row must satisfy.
    pub fn index_key(&self) -> Option<(&str, Vec<ScalarKey>)> {
        match self {
            Filter::Cmp {
                field,
                op: Op::Eq,
                operand: Operand::One(v),
                ..
            } => Some((field, vec![v.key()])),
            Filter::Cmp {
                field,
                op: Op::In,
                operand: Operand::Many(vs),
                ..
            } => Some((field, vs.iter().map(Scalar::key).collect())),
            Filter::And(parts) => parts.iter().find_map(Filter::index_key),
            _ => None,
        }
    }

    /// Whether every row this filter matches has `field` equal to `value`: a top-level
    /// `field = value` (a subscription to one object, say).
    pub fn pins(&self, field: &str, value: &Value) -> bool {
        match self {
            Filter::Cmp {
                field: f,
                op: Op::Eq,
                operand: Operand::One(v),
                ..
            } => f == field && v.to_json() == *value,
            Filter::And(parts) => parts.iter().any(|p| p.pins(field, value)),
            _ => false,
        }
    }
}

/// How large a client's filter may be (see `docs/limits.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Terms in one filter: comparisons (`field__op: value`) and nested filters (each
    /// entry of an `$or`, each `$not`), at any depth.
    pub max_terms: usize,
    /// Values in one `in` list.
    pub max_in: usize,
    /// Nesting of `$or` and `$not` (a flat filter has depth 1).
    pub max_depth: usize,
}

impl FilterLimits {
    /// No limit: for filters the app itself writes.
    pub const UNLIMITED: FilterLimits = FilterLimits {
        max_terms: usize::MAX,
        max_in: usize::MAX,
        max_depth: usize::MAX,
    };
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_terms: 64,
            max_in: 1000,
            max_depth: 8,
        }
    }
}

/// One parse: the schema, the limits, and the comparisons counted so far.
struct Parser<'a> {
    schema: &'a Schema,
    limits: &'a FilterLimits,
    terms: usize,
}

impl Parser<'_> {
    /// Counts one term against `max_terms`.
    fn term(&mut self) -> Result<(), Error> {
        self.terms += 1;
        if self.terms > self.limits.max_terms {
            return Err(Error::bad_request(format!(
                "filter has more than {} terms (limit max_terms)",
                self.limits.max_terms
            )));
        }
        Ok(())
    }

    fn object(&mut self, map: &Map<String, Value>, depth: usize) -> Result<Filter, Error> {
        if depth > 1 {
            self.term()?;
        }
        if depth > self.limits.max_depth {
            return Err(Error::bad_request(format!(
                "filter nested deeper than {} levels (limit max_depth)",
                self.limits.max_depth
            )));
        }
        let mut parts = Vec::with_capacity(map.len().min(64));
        for (key, value) in map {
            parts.push(self.entry(key, value, depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Filter::And(parts)
        })
    }

    fn entry(&mut self, key: &str, value: &Value, depth: usize) -> Result<Filter, Error> {
        match key {
            "$or" => {
                let Value::Array(items) = value else {
                    return Err(Error::bad_request("$or takes an array of filters"));
                };
                let mut parts = Vec::with_capacity(items.len().min(64));
                for item in items {
                    match item {
                        Value::Object(m) => parts.push(self.object(m, depth + 1)?),
                        _ => return Err(Error::bad_request("$or takes an array of filters")),
                    }
                }
                Ok(Filter::Or(parts))
            }
            "$not" => match value {
                Value::Object(m) => Ok(Filter::Not(Box::new(self.object(m, depth + 1)?))),
                _ => Err(Error::bad_request("$not takes a filter object")),
            },
            _ => {
                self.term()?;
                self.comparison(key, value)
            }
        }
    }

    fn comparison(&self, key: &str, value: &Value) -> Result<Filter, Error> {
        let schema = self.schema;
        let (name, op) = match key.rsplit_once("__") {
            Some((name, op)) => match Op::parse(op) {
                Some(op) => (name, op),
                None if schema.get(key).is_some() => (key, Op::Eq),
                None => {
                    return Err(Error::bad_request(format!(
                        "unknown lookup {op:?} in {key:?}"
                    )));
                }
            },
            None => (key, Op::Eq),
        };
        let field = schema.get(name).filter(|f| f.filterable).ok_or_else(|| {
            Error::bad_request(format!("field {name:?} is unknown or not filterable"))
        })?;
        let ty = field.ty;
        let bad_value = || {
            Error::bad_request(format!(
                "filter {key:?} needs a {} value, got {value}",
                ty.name()
            ))
        };
        let one = |v: &Value| ty.scalar(v).ok_or_else(bad_value);
        let operand = match op {
            Op::IsNull => Operand::Null(value.as_bool().ok_or_else(|| {
                Error::bad_request(format!("filter {key:?} needs true or false"))
            })?),
            Op::In => {
                let Value::Array(items) = value else {
                    return Err(Error::bad_request(format!("filter {key:?} needs an array")));
                };
                if items.len() > self.limits.max_in {
                    return Err(Error::bad_request(format!(
                        "filter {key:?} lists {} values; at most {} (limit max_in)",
                        items.len(),
                        self.limits.max_in
                    )));
                }
                Operand::Many(items.iter().map(one).collect::<Result<_, _>>()?)
            }
            Op::Lt | Op::Lte | Op::Gt | Op::Gte if !ty.is_ordered() => {
                return Err(Error::bad_request(format!(
                    "{key:?}: a {} field has no order",
                    ty.name()
                )));
            }
            Op::Contains | Op::IContains | Op::StartsWith if ty != FieldType::Text => {
                return Err(Error::bad_request(format!(
                    "{key:?}: text lookups need a string field"
                )));
            }
            _ => Operand::One(one(value)?),
        };
        Ok(Filter::Cmp {
            field: name.to_owned(),
            ty,
            nullable: field.nullable,
            op,
            operand,
        })
    }
}

#[cfg(test)]
mod tests;
