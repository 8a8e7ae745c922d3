//! In-memory evaluation: the one place operators get their meaning for live changes.

use serde_json::{Map, Value};

use super::{Filter, Op, Operand};
use crate::schema::{Scalar, fold_case};

impl Filter {
    /// Whether a published object matches. Two-valued: a comparison with a null (or
    /// missing, or mistyped) field value is false; only `isnull` sees nulls.
    pub fn matches(&self, object: &Map<String, Value>) -> bool {
        match self {
            Filter::And(parts) => parts.iter().all(|p| p.matches(object)),
            Filter::Or(parts) => parts.iter().any(|p| p.matches(object)),
            Filter::Not(inner) => !inner.matches(object),
            Filter::Cmp {
                field,
                ty,
                op,
                operand,
                ..
            } => {
                let raw = object.get(field).unwrap_or(&Value::Null);
                if let Operand::Null(want_null) = operand {
                    return raw.is_null() == *want_null;
                }
                let Some(value) = ty.scalar(raw) else {
                    return false;
                };
                compare(&value, *op, operand)
            }
        }
    }
}

fn compare(value: &Scalar, op: Op, operand: &Operand) -> bool {
    match (op, operand) {
        (Op::In, Operand::Many(list)) => list.iter().any(|v| v == value),
        (_, Operand::One(rhs)) => match op {
            Op::Eq => value == rhs,
            Op::Ne => value != rhs,
            Op::Lt => value < rhs,
            Op::Lte => value <= rhs,
            Op::Gt => value > rhs,
            Op::Gte => value >= rhs,
            Op::Contains | Op::IContains | Op::StartsWith => {
                let (Scalar::Text(hay), Scalar::Text(needle)) = (value, rhs) else {
                    return false;
                };
                match op {
                    Op::Contains => hay.contains(needle.as_str()),
                    Op::StartsWith => hay.starts_with(needle.as_str()),
                    _ => fold_case(hay).contains(&fold_case(needle)),
                }
            }
            Op::In | Op::IsNull => false,
        },
        _ => false,
    }
}
