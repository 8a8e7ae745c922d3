//! `dragon generate`: a model (entity, migration, route, test) or a custom router (route,
//! test), and the three lists the generator owns: `src/entity/mod.rs`, `src/routers/mod.rs`
//! and `migration/src/lib.rs`, rebuilt from the files present, never edited in place.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::CliError;
use crate::fields::Field;
use crate::names;
use crate::templates::render;
use crate::write::{Owner, Plan};

/// File names a model or router may not take: they are the project's own modules.
const TAKEN_MODULES: &[&str] = &[
    "mod", "common", "lib", "main", "config", "entity", "routers",
];

/// What `dragon generate model` makes.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub route: String,
    pub fields: Vec<Field>,
}

impl ModelSpec {
    pub fn new(name: &str, route: Option<&str>, fields: Vec<Field>) -> Result<Self, CliError> {
        names::ident("model", name)?;
        refuse_taken(name)?;
        let route = route.map_or_else(|| names::kebab(name), str::to_owned);
        names::route(&route)?;
        let mut seen = std::collections::HashSet::new();
        for f in &fields {
            if !seen.insert(f.name.as_str()) {
                return Err(CliError::Usage(format!(
                    "field {:?} is listed twice",
                    f.name
                )));
            }
        }
        Ok(ModelSpec {
            name: name.to_owned(),
            route,
            fields,
        })
    }
}

fn refuse_taken(name: &str) -> Result<(), CliError> {
    if TAKEN_MODULES.contains(&name) {
        return Err(CliError::Name(format!(
            "{name:?} is the name of one of the project's own modules; choose another"
        )));
    }
    Ok(())
}

fn quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Serialize)]
struct Length {
    field: String,
    min: usize,
    max: usize,
}

/// Plans a model's entity, migration, route and test.
pub fn model(plan: &mut Plan, root: &Path, spec: &ModelSpec, stamp: &str) -> Result<(), CliError> {
    let f = &spec.fields;
    let scalar =
        || std::iter::once("id").chain(f.iter().filter(|f| f.scalar()).map(|f| f.name.as_str()));
    let writable: Vec<&str> = f
        .iter()
        .filter(|f| !f.server_set())
        .map(|f| f.name.as_str())
        .collect();
    let validators: Vec<Length> = f
        .iter()
        .filter_map(|x| {
            x.length().map(|(min, max)| Length {
                field: x.name.clone(),
                min,
                max,
            })
        })
        .collect();
    let server_set: Vec<&str> = f
        .iter()
        .filter(|f| f.server_set())
        .map(|f| f.name.as_str())
        .collect();
    let sample = sample(f, |x| &x.sample);
    let update = f
        .iter()
        .find(|x| !x.server_set())
        .map(|x| format!("{{{:?}: {}}}", x.name, x.other_sample));
    let ctx = json!({
        "name": spec.name,
        "route": spec.route,
        "table": spec.name,
        "fields": f,
        "filterable": quoted(scalar()),
        "orderable": quoted(scalar()),
        "writable": quoted(writable.iter().copied()),
        "validators": validators,
        "server_set": server_set,
        "sample": sample,
        "update": update,
    });
    let name = &spec.name;
    plan.add(
        &format!("src/entity/{name}.rs"),
        render("generate/entity.rs.j2", &ctx)?,
        Owner::User,
        None,
    );
    plan.add(
        &format!("src/routers/{name}.rs"),
        render("generate/model_router.rs.j2", &ctx)?,
        Owner::User,
        None,
    );
    plan.add(
        &format!("tests/{name}.rs"),
        render("generate/model_test.rs.j2", &ctx)?,
        Owner::User,
        None,
    );
    let migration =
        existing_migration(plan, root, name)?.unwrap_or_else(|| format!("m{stamp}_create_{name}"));
    plan.add(
        &format!("migration/src/{migration}.rs"),
        render("generate/migration.rs.j2", &ctx)?,
        Owner::User,
        None,
    );
    Ok(())
}

/// A JSON object of every field that clients write, with sample values.
fn sample(fields: &[Field], value: impl Fn(&Field) -> &String) -> String {
    let parts: Vec<String> = fields
        .iter()
        .filter(|f| !f.server_set())
        .map(|f| format!("{:?}: {}", f.name, value(f)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Plans a custom router and its test.
pub fn router(plan: &mut Plan, name: &str, route: Option<&str>) -> Result<(), CliError> {
    names::ident("router", name)?;
    refuse_taken(name)?;
    let route = route.map_or_else(|| names::kebab(name), str::to_owned);
    names::route(&route)?;
    let ctx = json!({"name": name, "route": route, "type_name": names::camel(name)});
    plan.add(
        &format!("src/routers/{name}.rs"),
        render("generate/custom_router.rs.j2", &ctx)?,
        Owner::User,
        None,
    );
    plan.add(
        &format!("tests/{name}.rs"),
        render("generate/router_test.rs.j2", &ctx)?,
        Owner::User,
        None,
    );
    Ok(())
}

/// The migration module that already creates `model`'s table, if any (so generating the
/// model again reuses it instead of adding a second one).
fn existing_migration(plan: &Plan, root: &Path, model: &str) -> Result<Option<String>, CliError> {
    let suffix = format!("_create_{model}");
    let on_disk = modules(root, "migration/src")?;
    Ok(on_disk
        .into_iter()
        .chain(planned_modules(plan, "migration/src"))
        .find(|m| m.starts_with('m') && m.ends_with(&suffix)))
}

/// The `.rs` modules in a folder of the project (not `mod.rs`, `lib.rs`, `main.rs`).
fn modules(root: &Path, dir: &str) -> Result<Vec<String>, CliError> {
    let path = root.join(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CliError::io(&path, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io(&path, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(module) = file.strip_suffix(".rs")
            && !matches!(module, "mod" | "lib" | "main")
        {
            out.push(module.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn planned_modules<'a>(plan: &'a Plan, dir: &'a str) -> impl Iterator<Item = String> + 'a {
    plan.paths()
        .filter_map(move |p| {
            p.strip_prefix(dir)?
                .strip_prefix('/')?
                .strip_suffix(".rs")
                .map(str::to_owned)
        })
        .filter(|m| !m.contains('/') && !matches!(m.as_str(), "mod" | "lib" | "main"))
}

/// Plans the three lists, from the modules on disk plus the ones planned.
pub fn registries(plan: &mut Plan, root: &Path) -> Result<(), CliError> {
    for (dir, list, template) in [
        (
            "src/entity",
            "src/entity/mod.rs",
            "generate/entity_mod.rs.j2",
        ),
        (
            "src/routers",
            "src/routers/mod.rs",
            "generate/routers_mod.rs.j2",
        ),
        (
            "migration/src",
            "migration/src/lib.rs",
            "generate/migration_lib.rs.j2",
        ),
    ] {
        // A migration module's name starts with `m` (the timestamp); other files are not listed.
        let listed = |m: &String| dir != "migration/src" || m.starts_with('m');
        let mut before = modules(root, dir)?;
        before.retain(listed);
        let mut now: Vec<String> = before
            .iter()
            .cloned()
            .chain(planned_modules(plan, dir))
            .filter(listed)
            .collect();
        now.sort();
        now.dedup();
        let previous = render(template, &json!({ "modules": before }))?;
        let text = render(template, &json!({ "modules": now }))?;
        plan.add(list, text, Owner::Generator, Some(previous));
    }
    Ok(())
}

/// `YYYYMMDD_HHMMSS` in UTC, for migration names (they run in name order).
pub fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}_{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
