//! The clients (the author, the like-clients, the readers), the figures and the table.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dragon_core::client::{Client, Subscription};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{Options, Server, cpu_seconds};

/// What a reader saw: each `updated` event's arrival and the `likes` it showed.
type Seen = Vec<(Instant, i64)>;

pub(super) async fn run(opts: &Options, server: &Server, pinned: &str) {
    let url = format!("ws://{}/ws", server.addr);
    let token = login(&server.addr).await;
    let ann = Client::connect(&format!("{url}?token={token}"))
        .await
        .expect("ann connects");
    let blogs = ann
        .call("blog", "get_list", json!({"filter": {"slug": "news"}}))
        .await
        .expect("blogs")
        .data;
    let blog = blogs[0]["id"].as_i64().expect("the demo blog `news`");
    let post = json!({"data": {"blog_id": blog, "title": "Like me", "body": "A benchmark."}});
    let post = ann.call("post", "create", post).await.expect("a post").data["id"]
        .as_i64()
        .expect("post id");

    let connecting = Instant::now();
    let readers = connect_all(&url, opts.likes_readers, Some(post)).await;
    let likers = connect_all(&url, opts.likes_clients.max(1), None).await;
    eprintln!(
        "{} readers (subscribed) and {} like-clients connected in {:.1}s",
        readers.len(),
        likers.len(),
        connecting.elapsed().as_secs_f64()
    );

    let tops: Arc<Vec<AtomicI64>> = Arc::new(readers.iter().map(|_| AtomicI64::new(0)).collect());
    let (stop, stopped) = watch::channel(false);
    let watching: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, (c, sub))| {
            let sub = sub.expect("a reader's subscription");
            tokio::spawn(read(c, sub, tops.clone(), i, stopped.clone()))
        })
        .collect();

    // Every like at its time (open loop): like g is client g % n's, sent at g / rate.
    let total = opts.likes_rate * opts.likes_seconds;
    let rate = opts.likes_rate.max(1) as f64;
    let acks = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let pid = server.pid().to_string();
    let cpu_before = (cpu_seconds(&pid), cpu_seconds("self"));
    let start = Instant::now() + Duration::from_millis(100);
    let n = likers.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, (c, _)) in likers.into_iter().enumerate() {
        let (c, acks, failed, sent) = (Arc::new(c), acks.clone(), failed.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for g in (i as u64..total).step_by(n) {
                let at = start + Duration::from_secs_f64(g as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                sent.fetch_add(1, Ordering::Relaxed);
                let (c, acks, failed) = (c.clone(), acks.clone(), failed.clone());
                calls.push(tokio::spawn(async move {
                    let r = c.call("post", "like", json!({"id": post})).await;
                    match r {
                        Ok(out) if out.data["liked"] == true => {
                            acks.lock().expect("acks").push(Instant::now())
                        }
                        other => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("warning: a like failed: {other:?}");
                            }
                        }
                    }
                }));
            }
            let last_send = Instant::now();
            for call in calls {
                let _ = call.await;
            }
            last_send
        }));
    }
    let mut last_send = start;
    for t in tasks {
        last_send = last_send.max(t.await.expect("like-client"));
    }
    let mut acks = std::mem::take(&mut *acks.lock().expect("acks"));
    acks.sort_unstable();
    let stored = ann
        .call("post", "get_single", json!({"id": post}))
        .await
        .expect("the post")
        .data["likes"]
        .as_i64()
        .unwrap_or(-1);

    // Wait for every reader to show the stored count (published within 250 ms or so).
    let deadline = Instant::now() + Duration::from_secs(15);
    while tops.iter().any(|t| t.load(Ordering::Relaxed) < stored) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = Instant::now();
    let cpu_after = (cpu_seconds(&pid), cpu_seconds("self"));
    let _ = stop.send(true);
    let mut seen = Vec::with_capacity(watching.len());
    for w in watching {
        seen.push(w.await.expect("reader"));
    }

    // Latency: the k-th acknowledgement to each reader's first event with likes >= k.
    let mut lat: Vec<u32> = Vec::with_capacity(acks.len() * seen.len());
    let (mut uncovered, mut early) = (0usize, 0usize);
    for events in &seen {
        let mut e = 0;
        for (k0, ack) in acks.iter().enumerate() {
            while e < events.len() && events[e].1 < k0 as i64 + 1 {
                e += 1;
            }
            let Some((at, _)) = events.get(e) else {
                uncovered += acks.len() - k0;
                break;
            };
            early += usize::from(at < ack);
            lat.push(at.saturating_duration_since(*ack).as_micros() as u32);
        }
    }
    let (p50, p99) = crate::clients::p50_p99_ms(lat);

    let liking = acks
        .last()
        .map_or(Duration::ZERO, |t| t.duration_since(start));
    let per_sec = |events: &Seen| events.len() as f64 / liking.as_secs_f64().max(1e-9);
    let events_per_sec = seen.iter().map(per_sec).sum::<f64>() / seen.len().max(1) as f64;
    let finals: Vec<i64> = seen.iter().map(|s| s.last().map_or(0, |e| e.1)).collect();
    let (fmin, fmax) = (finals.iter().min(), finals.iter().max());
    let wall = end.duration_since(start).as_secs_f64();
    let share = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / wall * 100.0);
    let server_cpu = share(cpu_before.0, cpu_after.0);
    let client_cpu = share(cpu_before.1, cpu_after.1);
    let pct = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.0}%"));
    let sent = sent.load(Ordering::Relaxed);

    println!(
        "Likes: {n} like-clients, {} readers of one post; {} likes/s for {} s; {pinned}\n",
        finals.len(),
        opts.likes_rate,
        opts.likes_seconds
    );
    println!(
        "| like-clients | readers | likes sent | acknowledged | stored | final count seen (min / max) | events per reader/s | p50 ms | p99 ms | server CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    println!(
        "| {n} | {} | {sent} | {} | {stored} | {} / {} | {events_per_sec:.2} | {p50:.1} | {p99:.1} | {} |",
        finals.len(),
        acks.len(),
        fmin.map_or("-".into(), i64::to_string),
        fmax.map_or("-".into(), i64::to_string),
        pct(server_cpu)
    );
    println!(
        "\nEach like is one `post.like` call, sent at its time whether or not earlier ones were \
         answered; stored = the post's `likes` read afterwards; events per reader/s = `updated` \
         events each reader got per second of liking ({:.2} s, first like to last \
         acknowledgement; the server coalesces to one per {} ms at most); latency = from the \
         k-th acknowledgement (in time order) to a reader's first event showing likes >= k, \
         over every reader and like; server CPU = share of one core from the first like until \
         every reader had the stored count ({wall:.2} s); this process (clients): {}.",
        liking.as_secs_f64(),
        liveblog::likes::FLUSH_EVERY.as_millis(),
        pct(client_cpu)
    );
    let behind = last_send.saturating_duration_since(
        start + Duration::from_secs_f64(total.saturating_sub(1) as f64 / rate),
    );
    let mut notes = Vec::new();
    if behind > Duration::from_millis(20) {
        notes.push(format!("the last like was sent {behind:?} late"));
    }
    if failed.load(Ordering::Relaxed) > 0 {
        notes.push(format!("{} likes failed", failed.load(Ordering::Relaxed)));
    }
    if finals.iter().any(|&f| f != stored) {
        let off = finals.iter().filter(|&&f| f != stored).count();
        notes.push(format!(
            "{off} readers ended on a count other than {stored}"
        ));
    }
    if uncovered > 0 {
        notes.push(format!(
            "{uncovered} (reader, like) pairs never covered by an event"
        ));
    }
    if early > 0 {
        notes.push(format!(
            "{early} events arrived before the acknowledgement they cover (counted as 0 ms)"
        ));
    }
    for note in notes {
        println!("note: {note}");
    }
}

/// One reader: the `updated` events of its subscription until told to stop.
async fn read(
    client: Client,
    mut sub: Subscription,
    tops: Arc<Vec<AtomicI64>>,
    i: usize,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::new();
    loop {
        tokio::select! {
            e = sub.next() => {
                let Some(e) = e else { break };
                let at = Instant::now();
                if e.event != "updated" {
                    continue;
                }
                let likes = e.data.as_ref().and_then(|d| d["likes"].as_i64()).unwrap_or(0);
                seen.push((at, likes));
                tops[i].fetch_max(likes, Ordering::Relaxed);
            }
            _ = stop.changed() => break,
        }
    }
    drop(client);
    seen
}

/// `n` connections to `url`, 200 at a time; each subscribed to post `post`, if given.
async fn connect_all(
    url: &str,
    n: usize,
    post: Option<i64>,
) -> Vec<(Client, Option<Subscription>)> {
    let mut all = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for i in 0..n {
        let url = url.to_owned();
        pending.push(tokio::spawn(async move {
            let c = Client::connect(&url).await.expect("connect");
            let Some(id) = post else { return (c, None) };
            let args = json!({"filter": {"id": id}});
            let sub = c.subscribe("post", args).await.expect("subscribe");
            (c, Some(sub))
        }));
        if pending.len() == 200 || i + 1 == n {
            for p in pending.drain(..) {
                all.push(p.await.expect("connect"));
            }
        }
    }
    all
}

/// `POST /login` as the demo author ann; her token.
async fn login(addr: &str) -> String {
    let body = json!({"username": "ann", "password": "ann-pass"}).to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("login");
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("login");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("login");
    let (status, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(status.starts_with("HTTP/1.1 200"), "login: {answer}");
    let v: Value = serde_json::from_str(body).expect("login answer");
    v["token"].as_str().expect("a token").to_owned()
}
