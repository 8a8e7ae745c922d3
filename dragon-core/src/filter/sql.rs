//! Translation to SQL: the one place operators get their meaning in queries.
//!
//! Every comparison is made null-safe (`col IS NOT NULL AND ...`) so that SQL's three-valued
//! logic gives the same answers as [`Filter::matches`]; strings compare by code point
//! (`COLLATE "C"` on PostgreSQL, SQLite's default BINARY); text lookups use `instr`/`strpos`,
//! so `%`, `_` and `\` stay literal.

use sea_orm::DbBackend;
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait};

use super::{Filter, Op, Operand};
use crate::schema::{FieldType, Scalar, fold_case};

/// The SQLite function Dragon registers on every connection for `icontains`
/// (SQLite's own `lower()` only knows ASCII). See [`crate::db::connect`].
pub const SQLITE_LOWER_FN: &str = "dragon_lower";

impl Filter {
    /// The SQL condition selecting exactly the rows [`Filter::matches`] accepts.
    pub fn to_condition(&self, backend: DbBackend) -> Condition {
        match self {
            Filter::And(parts) => parts
                .iter()
                .fold(Condition::all(), |c, p| c.add(p.to_condition(backend))),
            Filter::Or(parts) => parts
                .iter()
                .fold(Condition::any(), |c, p| c.add(p.to_condition(backend))),
            Filter::Not(inner) => Condition::all().add(inner.to_condition(backend)).not(),
            Filter::Cmp {
                field,
                ty,
                nullable,
                op,
                operand,
            } => {
                let cmp = comparison(backend, field, *ty, *op, operand);
                let guarded = *nullable && !matches!(operand, Operand::Null(_));
                if guarded {
                    Condition::all().add(col(field).is_not_null()).add(cmp)
                } else {
                    Condition::all().add(cmp)
                }
            }
        }
    }
}

/// A custom SQL expression; `?` marks each argument, in order, whatever the backend's
/// placeholder style.
fn cust(backend: DbBackend, template: &str, args: impl IntoIterator<Item = Expr>) -> Expr {
    let template = if backend == DbBackend::Postgres {
        let mut out = String::with_capacity(template.len() + 4);
        let mut n = 0;
        for ch in template.chars() {
            if ch == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(ch);
            }
        }
        out
    } else {
        template.to_owned()
    };
    Expr::cust_with_exprs(template, args)
}

fn col(field: &str) -> Expr {
    Expr::col(Alias::new(field))
}

/// A column as it must be compared or sorted: by code point on every backend.
pub(crate) fn ordered_col(backend: DbBackend, field: &str, ty: FieldType) -> Expr {
    if backend == DbBackend::Postgres && ty == FieldType::Text {
        cust(backend, "? COLLATE \"C\"", [col(field)])
    } else {
        col(field)
    }
}

fn comparison(backend: DbBackend, field: &str, ty: FieldType, op: Op, operand: &Operand) -> Expr {
    let pg = backend == DbBackend::Postgres;
    match (op, operand) {
        (Op::IsNull, Operand::Null(true)) => col(field).is_null(),
        (Op::IsNull, _) => col(field).is_not_null(),
        (Op::In, Operand::Many(values)) if values.is_empty() => Expr::cust("1 = 0"),
        (Op::In, Operand::Many(values)) => col(field).is_in(values.iter().map(Scalar::to_db)),
        (_, Operand::One(value)) => {
            let v = Expr::val(value.to_db());
            match op {
                Op::Eq => col(field).eq(v),
                Op::Ne => col(field).ne(v),
                Op::Lt => ordered_col(backend, field, ty).lt(v),
                Op::Lte => ordered_col(backend, field, ty).lte(v),
                Op::Gt => ordered_col(backend, field, ty).gt(v),
                Op::Gte => ordered_col(backend, field, ty).gte(v),
                Op::Contains if pg => cust(backend, "strpos(?, ?) > 0", [col(field), v]),
                Op::Contains => cust(backend, "instr(?, ?) > 0", [col(field), v]),
                Op::StartsWith if pg => cust(backend, "starts_with(?, ?)", [col(field), v]),
                Op::StartsWith => cust(
                    backend,
                    "substr(?, 1, length(?)) = ?",
                    [col(field), v.clone(), v],
                ),
                Op::IContains => {
                    let Scalar::Text(needle) = value else {
                        return Expr::cust("1 = 0");
                    };
                    let needle = Expr::val(fold_case(needle));
                    if pg {
                        cust(backend, "strpos(lower(?), ?) > 0", [col(field), needle])
                    } else {
                        let template = format!("instr({SQLITE_LOWER_FN}(?), ?) > 0");
                        cust(backend, &template, [col(field), needle])
                    }
                }
                Op::In | Op::IsNull => Expr::cust("1 = 0"),
            }
        }
        _ => Expr::cust("1 = 0"),
    }
}
