//! The `dragon` command as a user runs it: help, refusals (one line, non-zero exit), and
//! generators that never touch what they do not own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dragon(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dragon"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run dragon")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dragon-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A refusal: non-zero exit, and one line that starts with `error:` and says `what`.
fn refused(out: &Output, what: &str) {
    assert!(!out.status.success(), "should fail: {}", stdout(out));
    let err = stderr(out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(what), "{err:?} should mention {what:?}");
}

#[test]
fn help_and_version_are_complete() {
    let dir = temp_dir("help");
    let version = stdout(&dragon(&dir, &["--version"]));
    assert_eq!(
        version.trim(),
        format!("dragon {}", env!("CARGO_PKG_VERSION"))
    );
    for (args, must) in [
        (
            &["--help"][..],
            &["createproject", "generate", "Examples"][..],
        ),
        (
            &["createproject", "--help"],
            &["--db", "--broker", "--dragon-path", "Examples"],
        ),
        (
            &["generate", "model", "--help"],
            &["--route", "--force", "string, text, int", "Examples"],
        ),
        (&["generate", "router", "--help"], &["--route", "Example"]),
    ] {
        let out = dragon(&dir, args);
        assert!(out.status.success(), "{args:?}");
        for m in must {
            assert!(stdout(&out).contains(m), "{args:?} help lacks {m:?}");
        }
    }
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let dir = temp_dir("refusals");
    refused(
        &dragon(&dir, &["createproject", "1shop"]),
        "not a valid crate name",
    );
    refused(&dragon(&dir, &["createproject", "self"]), "keyword");
    refused(
        &dragon(&dir, &["createproject", "shop", "--db", "mysql"]),
        "mysql",
    );
    refused(
        &dragon(&dir, &["createproject", "shop", "--bogus"]),
        "--bogus",
    );
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/keep.txt"), "mine").unwrap();
    refused(
        &dragon(&dir, &["createproject", "taken"]),
        "already exists and is not empty",
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("taken/keep.txt")).unwrap(),
        "mine"
    );
    refused(
        &dragon(&dir, &["generate", "model", "note", "title:string"]),
        "not a Dragon project",
    );

    let out = dragon(&dir, &["createproject", "shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shop = dir.join("shop");
    for (args, what) in [
        (
            &["generate", "model", "note", "title:str"][..],
            "unknown field type \"str\"",
        ),
        (&["generate", "model", "note", "title"], "must be name:type"),
        (&["generate", "model", "Note", "title:string"], "snake_case"),
        (&["generate", "model", "note", "id:int"], "`id` is added"),
        (
            &["generate", "model", "note", "a:int", "a:text"],
            "listed twice",
        ),
        (
            &["generate", "model", "common", "a:int"],
            "project's own modules",
        ),
        (
            &["generate", "model", "note", "a:int", "--route", "Bad Route"],
            "route",
        ),
        (&["generate", "router", "type"], "keyword"),
    ] {
        refused(&dragon(&shop, args), what);
    }
}

/// Every file under `dir` with its contents, for comparing trees.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn generators_are_idempotent_and_never_overwrite_your_changes() {
    let dir = temp_dir("idempotent");
    assert!(dragon(&dir, &["createproject", "shop"]).status.success());
    let shop = dir.join("shop");
    let model = [
        "generate",
        "model",
        "note",
        "title:string",
        "body:text?",
        "pinned:bool",
    ];
    let out = dragon(&shop, &model);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        dragon(&shop, &["generate", "router", "chat"])
            .status
            .success()
    );
    let before = snapshot(&shop);
    let again = dragon(&shop, &model);
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );
    assert!(
        dragon(&shop, &["generate", "router", "chat"])
            .status
            .success()
    );
    assert_eq!(snapshot(&shop), before, "a second run changes nothing");

    // The user changes their router; generating the model again leaves it alone.
    let router = shop.join("src/routers/note.rs");
    let mine = std::fs::read_to_string(&router).unwrap() + "\n// mine\n";
    std::fs::write(&router, &mine).unwrap();
    refused(&dragon(&shop, &model), "src/routers/note.rs");
    assert_eq!(std::fs::read_to_string(&router).unwrap(), mine);
    // A list the generator owns, edited by hand, is not overwritten either.
    let list = shop.join("src/entity/mod.rs");
    std::fs::write(&list, "// hand-made\n").unwrap();
    refused(
        &dragon(&shop, &["generate", "model", "tag", "name:string"]),
        "src/entity/mod.rs",
    );
    assert!(
        !shop.join("src/entity/tag.rs").exists(),
        "nothing is written when anything is refused"
    );
    // --force overwrites.
    let out = dragon(
        &shop,
        &["generate", "model", "tag", "name:string", "--force"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&list)
            .unwrap()
            .contains("pub mod tag;")
    );
}
