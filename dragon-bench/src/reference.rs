//! The reference: the least a WebSocket broadcaster can do with tokio-tungstenite.
//! One writer task per client; each event is one shared frame cloned to every writer.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::Figures;
use crate::clients::{Fleet, Plan, Source};

type Writers = Arc<Mutex<Vec<mpsc::UnboundedSender<Message>>>>;

struct Broadcast {
    writers: Writers,
}

impl Source for Broadcast {
    async fn send(&mut self, t0: u64) {
        // Shaped like Dragon's event frame, so both move the same bytes.
        let frame = format!(
            r#"{{"event":"created","route":"bench-item","subs":["s1"],"data":{{"id":{t0},"list_id":1,"text":"{t0}"}},"position":"1-{t0}"}}"#
        );
        let bytes = Utf8Bytes::from(frame);
        for w in self.writers.lock().expect("writers").iter() {
            let _ = w.send(Message::Text(bytes.clone()));
        }
    }
}

/// The broadcaster on a free port: its URL, its writers, its accept task.
async fn serve() -> (String, Writers, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writers: Writers = Arc::default();
    let accepted = writers.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                accepted.lock().expect("writers").push(tx);
                tokio::spawn(async move { while stream.next().await.is_some() {} });
                while let Some(msg) = rx.recv().await {
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (format!("ws://{addr}/"), writers, server)
}

async fn connected(writers: &Writers, n: usize) {
    while writers.lock().expect("writers").len() < n {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub async fn run(plan: &Plan) -> Figures {
    let (url, writers, server) = serve().await;
    let mut fleet = Fleet::connect(&[url], plan.clients, None).await;
    connected(&writers, plan.clients).await;
    let mut source = Broadcast {
        writers: writers.clone(),
    };
    let figures = fleet.measure(plan, &mut source).await;
    server.abort();
    writers.lock().expect("writers").clear();
    figures
}

/// Resident memory (KiB) before and after `n` clients connect.
pub async fn rss(n: usize) -> (u64, u64) {
    let (url, writers, _server) = serve().await;
    let before = crate::clients::rss_kib();
    let _fleet = Fleet::connect(&[url], n, None).await;
    connected(&writers, n).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    (before, crate::clients::rss_kib())
}
