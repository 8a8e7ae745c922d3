//! One fuzzing connection to the server, replaced when a frame breaks it, and the check
//! every frame gets: one reply with the right id and an allowed code, then a working ping.

use std::time::Duration;

use serde_json::json;

use super::child::Child;
use super::oracle::{Violation, check_reply, readable_id, shape};
use super::wire::{RawConn, panic_mark};

/// A fresh connection every this many frames, so subscriptions and presence stay bounded.
const FRAMES_PER_CONN: usize = 500;

#[derive(Default)]
pub struct Session {
    server: Option<Child>,
    conn: Option<RawConn>,
    frames_on_conn: usize,
    seeded: bool,
    /// Frames sent and checked (generated, shrinking and corpus alike).
    pub frames: u64,
    /// Times the server process died and was started again.
    pub restarts: u64,
}

impl Session {
    /// Sends one frame and checks the invariants; the connection is dropped on a violation
    /// (its state is unknown), so the next frame starts clean.
    pub async fn check(&mut self, frame: &[u8]) -> Result<(), Violation> {
        self.frames += 1;
        let result = self.check_on_conn(frame).await;
        if result.is_err() {
            self.conn = None;
        }
        result.map_err(|v| self.died(&v).unwrap_or_else(|| self.explained(v)))
    }

    /// An `internal` reply with the server's log line for it.
    fn explained(&self, mut violation: Violation) -> Violation {
        if violation.class.starts_with("`internal`")
            && let Some(line) = self
                .server
                .as_ref()
                .and_then(|s| s.last_line_with("internal error"))
        {
            violation.detail = format!("{}; server log: {line}", violation.detail);
        }
        violation
    }

    /// If the server process is gone: why, as the violation (and a new one starts next).
    /// When the socket failed, the process gets a moment to finish dying.
    fn died(&mut self, violation: &Violation) -> Option<Violation> {
        let socket_failed = ["dropped", "cannot connect", "socket is gone"]
            .iter()
            .any(|s| violation.class.contains(s));
        let wait = Duration::from_millis(if socket_failed { 2_000 } else { 0 });
        let (cause, detail) = self.server.as_mut()?.death(wait)?;
        self.server = None;
        self.seeded = false;
        self.restarts += 1;
        let class = format!("the server process died: {}", shape(&cause));
        Some(Violation::new(class, detail))
    }

    async fn check_on_conn(&mut self, frame: &[u8]) -> Result<(), Violation> {
        let expected_id = readable_id(frame);
        let conn = self.conn().await?;
        let mark = panic_mark();
        conn.send_raw(frame).await?;
        let reply = conn.reply(mark).await?;
        check_reply(&reply, &expected_id, frame)?;
        if std::str::from_utf8(frame).is_ok() {
            return conn.ping().await;
        }
        // RFC 6455: a text frame that is not UTF-8 fails the connection, with 1007, after
        // the reply that says why. The next frame gets a new connection.
        let code = conn.close_code().await;
        self.conn = None;
        match code? {
            1007 => Ok(()),
            other => Err(Violation::new(
                format!("invalid UTF-8 closed with {other}, not 1007"),
                "",
            )),
        }
    }

    /// The open connection, or a new one (starting the server and seeding its database
    /// first if needed).
    async fn conn(&mut self) -> Result<&mut RawConn, Violation> {
        if self.frames_on_conn >= FRAMES_PER_CONN {
            self.conn = None;
        }
        if self.conn.is_none() {
            let server = self.server.get_or_insert_with(Child::start);
            let mut conn = RawConn::connect(&server.url).await?;
            if !self.seeded {
                seed(&mut conn).await?;
                self.seeded = true;
            }
            self.conn = Some(conn);
            self.frames_on_conn = 0;
        }
        self.frames_on_conn += 1;
        Ok(self.conn.as_mut().expect("just set"))
    }
}

/// A few lists and items, so generated ids (1 to 23) often name rows that exist.
async fn seed(conn: &mut RawConn) -> Result<(), Violation> {
    for l in 1..=3 {
        conn.call(
            "todo-list",
            "create",
            json!({"data": {"name": format!("list {l}")}}),
        )
        .await?;
    }
    for i in 0..12 {
        let data = json!({"list_id": i % 3 + 1, "text": format!("item {i}"), "position": i});
        conn.call("todo-item", "create", json!({ "data": data }))
            .await?;
    }
    Ok(())
}
