//! The client process: members and watchers, their requests, and the tally of what they saw.

use super::*;

/// What the connections saw in the current phase.
#[derive(Default)]
pub(super) struct Tally {
    /// Member changes (joins and leaves) the watchers are to see.
    pub(super) target: AtomicU64,
    /// Member changes the watchers saw.
    pub(super) changes: AtomicU64,
    /// Presence frames every connection received.
    pub(super) frames: AtomicU64,
    /// When the watchers' changes reached the target (µs of the wall clock).
    pub(super) reached_at: AtomicU64,
    /// The last presence frame anywhere.
    pub(super) last_at: AtomicU64,
    /// Request sent -> watcher received, µs.
    pub(super) latencies: Mutex<Vec<u32>>,
    /// Connection id -> when its leave was sent (leaves carry the last state, not a time).
    pub(super) left_at: Mutex<HashMap<String, u64>>,
}

impl Tally {
    pub(super) fn arm(&self, target: u64) {
        self.changes.store(0, Ordering::SeqCst);
        self.frames.store(0, Ordering::SeqCst);
        self.reached_at.store(0, Ordering::SeqCst);
        self.last_at.store(0, Ordering::SeqCst);
        self.latencies.lock().expect("latencies").clear();
        self.left_at.lock().expect("left_at").clear();
        self.target.store(target, Ordering::SeqCst);
    }

    /// A watcher's event: applied to its view; latency of each change, and the count.
    pub(super) fn watched(&self, frame: &str, view: &View) {
        let now = now_micros();
        let Ok(v) = serde_json::from_str::<Value>(frame) else {
            return;
        };
        let mut n = 0;
        let mut lat = Vec::new();
        let mut view = view.lock().expect("view");
        let conn_of = |m: &Value| m.get("conn").and_then(Value::as_str).map(str::to_owned);
        if let Some(leaves) = v.get("leaves").and_then(Value::as_array) {
            let left_at = self.left_at.lock().expect("left_at");
            for m in leaves {
                n += 1;
                let Some(conn) = conn_of(m) else { continue };
                if let Some(t) = left_at.get(&conn) {
                    lat.push(now.saturating_sub(*t) as u32);
                }
                view.remove(&conn);
            }
        }
        if let Some(joins) = v.get("joins").and_then(Value::as_array) {
            for m in joins {
                n += 1;
                if let Some(t) = m.pointer("/state/t").and_then(Value::as_u64) {
                    lat.push(now.saturating_sub(t) as u32);
                }
                let version = m.pointer("/state/v").and_then(Value::as_u64).unwrap_or(0);
                if let Some(conn) = conn_of(m) {
                    view.insert(conn, version);
                }
            }
        }
        drop(view);
        self.latencies.lock().expect("latencies").extend(lat);
        let seen = self.changes.fetch_add(n, Ordering::SeqCst) + n;
        let target = self.target.load(Ordering::SeqCst);
        if seen >= target && seen - n < target {
            self.reached_at.store(now, Ordering::SeqCst);
        }
    }

    pub(super) fn framed(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.last_at.fetch_max(now_micros(), Ordering::Relaxed);
    }
}

/// What a watcher believes its key's members are: connection id -> state version (`v`).
pub(super) type View = Arc<Mutex<HashMap<String, u64>>>;

/// A reply's request id, and `Err` with the frame of a failure.
pub(super) type Replied = (u64, Result<(), String>);

/// How long a request may wait for its reply before it counts as failed.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection: its sink, and the replies its reader hands over.
pub(super) struct Client {
    pub(super) conn: String,
    pub(super) sink: Sink,
    pub(super) replies: mpsc::UnboundedReceiver<Replied>,
    pub(super) next_id: u64,
}

impl Client {
    /// Connects; a watcher (`view` given) keeps its key's members in the view.
    pub(super) async fn connect(url: &str, tally: Arc<Tally>, view: Option<View>) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let (sink, mut stream) = ws.split();
        let conn = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"hello\"") => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("hello");
                    break v["data"]["conn"].as_str().expect("conn id").to_owned();
                }
                Some(Ok(_)) => continue,
                other => panic!("no hello: {other:?}"),
            }
        };
        let (tx, replies) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(stream, tally, view, tx));
        Client {
            conn,
            sink,
            replies,
            next_id: 0,
        }
    }

    /// Sends one request (args built just before sending) and waits for its reply.
    pub(super) async fn request(&mut self, verb: &str, args: Value) -> Result<(), String> {
        self.next_id += 1;
        let frame = json!({"id": self.next_id, "route": ROUTE, "verb": verb, "args": args});
        self.sink
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| e.to_string())?;
        let id = self.next_id;
        let wait = async {
            loop {
                match self.replies.recv().await {
                    // A reply that came after its request timed out.
                    Some((got, _)) if got != id && got != 0 => continue,
                    Some((_, result)) => return result,
                    None => return Err("connection closed".to_owned()),
                }
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| Err(format!("{verb}: no reply within {REPLY_TIMEOUT:?}")))
    }
}

pub(super) async fn read_loop(
    mut stream: Stream,
    tally: Arc<Tally>,
    view: Option<View>,
    replies: mpsc::UnboundedSender<Replied>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        if t.starts_with("{\"event\":\"presence\"") {
            if let Some(view) = &view {
                tally.watched(t, view);
            }
            tally.framed();
        } else if let Some(rest) = t.strip_prefix("{\"id\":") {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let id = rest[..digits].parse().unwrap_or(0);
            let ok = t.contains("\"ok\":true");
            let _ = replies.send((id, if ok { Ok(()) } else { Err(t.to_owned()) }));
        }
    }
    let _ = replies.send((0, Err("connection closed".to_owned())));
}

pub(super) fn key_name(k: usize) -> String {
    format!("room-{k}")
}

/// A member's state: a name, a flag, and when it was sent (µs), for the watcher's latency.
pub(super) fn state(m: usize, version: usize) -> Value {
    json!({"name": format!("Member {m}"), "editing": version % 2 == 1, "v": version, "t": now_micros()})
}

#[derive(Clone, Copy)]
pub(super) enum Verb {
    Join,
    /// `n` updates per member, at `rate` per second over all members (0: back to back).
    Update {
        n: usize,
        rate: f64,
    },
    Leave,
}

pub(super) struct Clients {
    pub(super) tally: Arc<Tally>,
    pub(super) members: Vec<Client>,
    pub(super) keys: usize,
    pub(super) _watchers: Vec<Client>,
    /// Per key: its watcher's view.
    pub(super) views: Vec<View>,
    /// Per member: what its key's watcher may show.
    pub(super) expect: Vec<Expect>,
}

/// The version of a leave in a member's outcomes.
pub(super) const LEFT: u64 = u64::MAX;

/// What a watcher may show for one member, from the answers its requests got. A failed
/// request may or may not have taken effect, so it widens what is right.
#[derive(Debug, Clone, Default)]
pub(super) struct Expect {
    /// `Some(true)`: a member; `Some(false)`: not one; `None`: either (a request failed).
    pub(super) present: Option<bool>,
    /// The state versions its key's watcher may show.
    pub(super) versions: Vec<u64>,
}

impl Expect {
    pub(super) fn absent() -> Self {
        Expect {
            present: Some(false),
            versions: Vec::new(),
        }
    }

    /// A request's outcome: a join (`version` 0) or update, or a leave ([`LEFT`]).
    pub(super) fn answered(&mut self, version: u64, ok: bool) {
        match (version, ok) {
            (LEFT, true) => *self = Expect::absent(),
            (LEFT, false) => self.present = None,
            (_, true) => {
                self.present = Some(true);
                self.versions = vec![version];
            }
            (_, false) => {
                if self.present == Some(false) {
                    self.present = None;
                }
                self.versions.push(version);
            }
        }
    }
}

impl Clients {
    /// Member `m` is on key `m % keys`; with two nodes, a key's watcher is on node
    /// `key % 2` and its members alternate between the nodes, so half are on the other.
    pub(super) async fn connect(urls: &[String], opts: &Options) -> Clients {
        let tally = Arc::new(Tally::default());
        let keys = opts.presence_keys.max(1);
        let nodes = urls.len();
        let views: Vec<View> = (0..keys).map(|_| View::default()).collect();
        let mut watchers = Vec::new();
        let mut pending = Vec::new();
        for (k, view) in views.iter().enumerate() {
            let url = urls[k % nodes].clone();
            let tally = tally.clone();
            let view = Some(view.clone());
            pending.push(tokio::spawn(async move {
                let mut c = Client::connect(&url, tally, view).await;
                c.request("presence_watch", json!({"key": key_name(k)}))
                    .await
                    .expect("watch");
                c
            }));
            if pending.len() >= 256 {
                for p in pending.drain(..) {
                    watchers.push(p.await.expect("watcher"));
                }
            }
        }
        for p in pending.drain(..) {
            watchers.push(p.await.expect("watcher"));
        }
        let mut members = Vec::new();
        for m in 0..opts.presence_members {
            let k = m % keys;
            let url = urls[(k + m / keys) % nodes].clone();
            let tally = tally.clone();
            pending.push(tokio::spawn(async move {
                Client::connect(&url, tally, None).await
            }));
            if pending.len() >= 256 {
                for p in pending.drain(..) {
                    members.push(p.await.expect("member"));
                }
            }
        }
        for p in pending {
            members.push(p.await.expect("member"));
        }
        Clients {
            tally,
            expect: vec![Expect::absent(); members.len()],
            members,
            keys,
            _watchers: watchers,
            views,
        }
    }

    /// How many watchers show exactly what their key's members may be, given the answers
    /// the members' requests got (see [`Expect`]).
    pub(super) fn in_sync(&self) -> usize {
        let mut of_key: Vec<Vec<usize>> = vec![Vec::new(); self.keys];
        for m in 0..self.members.len() {
            of_key[m % self.keys].push(m);
        }
        self.views
            .iter()
            .zip(&of_key)
            .filter(|(view, members)| {
                let view = view.lock().expect("view");
                let known = members
                    .iter()
                    .filter(|&&m| view.contains_key(&self.members[m].conn))
                    .count();
                known == view.len()
                    && members.iter().all(|&m| {
                        let e = &self.expect[m];
                        match (view.get(&self.members[m].conn), e.present) {
                            (Some(_), Some(false)) | (None, Some(true)) => false,
                            (Some(v), _) => e.versions.contains(v),
                            (None, _) => true,
                        }
                    })
            })
            .count()
    }

    /// Runs one phase: every member sends its requests (at `rate` per second over all
    /// members for joins and leaves, 0 for all at once); the result line for the server.
    pub(super) async fn phase(&mut self, verb: Verb, rate: f64) -> String {
        let n = self.members.len();
        let target = match verb {
            Verb::Update { n: updates, .. } => (n * updates) as u64,
            _ => n as u64,
        };
        let tally = self.tally.clone();
        tally.arm(target);
        let start = tokio::time::Instant::now();
        let start_us = now_micros();
        let mut tasks = Vec::with_capacity(n);
        for (m, c) in self.members.drain(..).enumerate() {
            let key = key_name(m % self.keys);
            let tally = tally.clone();
            let delay = if rate > 0.0 {
                Duration::from_secs_f64(m as f64 / rate)
            } else {
                Duration::ZERO
            };
            let at = start + delay;
            tasks.push(tokio::spawn(member(c, m, key, verb, at, n, tally)));
        }
        let mut errors = 0u64;
        for (m, t) in tasks.into_iter().enumerate() {
            let (c, outcomes) = t.await.expect("member task");
            for (version, result) in outcomes {
                if let Err(e) = &result {
                    if errors < 3 {
                        eprintln!("request failed: {e}");
                    }
                    errors += 1;
                }
                self.expect[m].answered(version, result.is_ok());
            }
            self.members.push(c);
        }
        // Every reply is in; wait for the watchers (while they make progress) to see every
        // change or to be in sync (a re-read folds changes into one), then for the members'
        // last frames.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut progress = (tally.changes.load(Ordering::SeqCst), Instant::now());
        let mut synced_at = 0;
        let mut checked = Instant::now();
        loop {
            let changes = tally.changes.load(Ordering::SeqCst);
            if changes >= target || Instant::now() > deadline {
                break;
            }
            if checked.elapsed() > Duration::from_millis(50) {
                checked = Instant::now();
                if self.in_sync() == self.keys {
                    synced_at = now_micros();
                    break;
                }
            }
            if changes != progress.0 {
                progress = (changes, Instant::now());
            } else if progress.1.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        loop {
            let frames = tally.frames.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            if tally.frames.load(Ordering::SeqCst) == frames || Instant::now() > deadline {
                break;
            }
        }
        let changes = tally.changes.load(Ordering::SeqCst);
        let complete = changes >= target;
        let in_sync = self.in_sync();
        let last = tally.last_at.load(Ordering::SeqCst);
        let end = match (tally.reached_at.load(Ordering::SeqCst), synced_at) {
            (0, 0) => last,
            (0, t) | (t, _) => t,
        };
        let secs = end.saturating_sub(start_us) as f64 / 1e6;
        let deliveries_secs = last.saturating_sub(start_us) as f64 / 1e6;
        let lat = std::mem::take(&mut *tally.latencies.lock().expect("latencies"));
        let (p50, p99) = crate::clients::p50_p99_ms(lat);
        format!(
            "done {changes} {target} {} {secs} {} {deliveries_secs} {} {} {errors} {in_sync}",
            complete as u8,
            tally.frames.load(Ordering::SeqCst),
            p50,
            p99,
        )
    }
}

/// One member's part of a phase, from `at`: its requests (one at a time), and their
/// outcomes (the state version, or [`LEFT`]).
pub(super) async fn member(
    mut c: Client,
    m: usize,
    key: String,
    verb: Verb,
    at: tokio::time::Instant,
    members: usize,
    tally: Arc<Tally>,
) -> (Client, Vec<(u64, Result<(), String>)>) {
    let mut outcomes = Vec::new();
    tokio::time::sleep_until(at).await;
    match verb {
        Verb::Join => {
            let args = json!({"key": key, "state": state(m, 0)});
            outcomes.push((0, c.request("presence_join", args).await));
        }
        Verb::Update { n, rate } => {
            // Every member updates once per round, so each waits `members / rate` between.
            let every = if rate > 0.0 {
                Duration::from_secs_f64(members as f64 / rate)
            } else {
                Duration::ZERO
            };
            for u in 1..=n {
                // A late reply delays the next update: never more than one in flight.
                tokio::time::sleep_until(at + every * (u as u32 - 1)).await;
                let args = json!({"key": key, "state": state(m, u)});
                outcomes.push((u as u64, c.request("presence_update", args).await));
            }
        }
        Verb::Leave => {
            let now = now_micros();
            let left_at = &tally.left_at;
            left_at.lock().expect("left_at").insert(c.conn.clone(), now);
            let args = json!({"key": key});
            outcomes.push((LEFT, c.request("presence_leave", args).await));
        }
    }
    (c, outcomes)
}

/// The client process: connects every watcher (each watches its key) and member, then
/// runs the phases it is told on stdin (`join <rate>`, `update <n> <rate>`,
/// `leave <rate>`), answering each with a `done ...` line.
pub(super) async fn fleet_main(urls: &str, opts: &Options) {
    use tokio::io::AsyncBufReadExt;
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let mut fleet = Clients::connect(&urls, opts).await;
    println!("ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| {
            parts
                .get(i)
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let result = match parts.first() {
            Some(&"join") => fleet.phase(Verb::Join, num(1)).await,
            Some(&"leave") => fleet.phase(Verb::Leave, num(1)).await,
            Some(&"update") => {
                let verb = Verb::Update {
                    n: num(1) as usize,
                    rate: num(2),
                };
                fleet.phase(verb, num(2)).await
            }
            _ => break,
        };
        println!("{result}");
    }
}
