//! The only task that writes a connection's socket: queued frames written in batches and
//! flushed once per batch, bounded by the outbox's grace, ending with the right close frame.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;

use crate::hub::{Outbound, Outbox, Receiver, Stop};
use crate::protocol::{CloseCode, close};

/// How the writer's loop ends.
enum WriterEnd {
    /// Send this close frame (the socket still works).
    Close(CloseCode, String),
    /// The socket is unusable, or the reader said so.
    Dead,
    /// The socket took nothing for the grace, or the client stayed over its budget (4008).
    Stuck,
}

/// The only task that writes to the socket. Frames already queued are written together
/// and flushed once, so a busy connection costs one syscall per batch, not per frame. A
/// batch the socket does not take within the grace ends the connection (4008): a client
/// that stops reading holds no task and no memory beyond its budget for long. While it
/// waits, the writer holds its socket half, its queue and nothing else (the reasons to stop
/// are bits in the outbox that wake it like a queued frame).
pub(super) async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut rx: Receiver,
    outbox: Arc<Outbox>,
) {
    // However it ends, the reader hears of it.
    struct Ended<'a>(&'a Outbox);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.writer_ended.raise();
        }
    }
    let _ended = Ended(&outbox);
    let end = loop {
        let first = match rx.next().await {
            Ok(first) => first,
            Err(Stop::Killed) => break WriterEnd::Stuck,
            Err(Stop::GoingAway) => {
                break WriterEnd::Close(close::GOING_AWAY, "server going away".into());
            }
            Err(Stop::SocketGone) => break WriterEnd::Dead,
        };
        // Most batches complete without waiting for the socket: the timer that bounds a
        // stuck write is only armed for one that has to wait.
        let mut batch = std::pin::pin!(write_batch(&mut sink, first, &mut rx, &outbox));
        let outcome = match std::future::poll_fn(|cx| Poll::Ready(batch.as_mut().poll(cx))).await {
            Poll::Ready(done) => Ok(done),
            Poll::Pending => tokio::select! {
                outcome = Box::pin(tokio::time::timeout(outbox.grace(), batch)) => outcome.map_err(|_| ()),
                _ = outbox.until_killed() => Err(()),
            },
        };
        let ended = match outcome {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(close))) => Some(close),
            Ok(Err(())) => Some(WriterEnd::Dead),
            Err(()) => {
                tracing::debug!(
                    conn = outbox.id(),
                    "the socket took no data for the grace: closing with 4008"
                );
                Some(WriterEnd::Stuck)
            }
        };
        if let Some(end) = ended {
            break end;
        }
    };
    // Boxed: the closing steps are not part of every waiting writer's memory.
    Box::pin(finish(sink, end)).await;
}

/// Sends the close frame `end` calls for (a stuck socket gets a moment's try) and closes.
async fn finish(mut sink: SplitSink<WebSocket, WsMessage>, end: WriterEnd) {
    let bounded = match end {
        WriterEnd::Stuck => std::time::Duration::from_millis(100),
        _ => std::time::Duration::from_secs(2),
    };
    let frame = match end {
        WriterEnd::Stuck => Some(CloseFrame {
            code: close::SLOW_CONSUMER.into(),
            reason: "slow consumer".into(),
        }),
        WriterEnd::Close(code, reason) => Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }),
        WriterEnd::Dead => None,
    };
    if let Some(frame) = frame {
        let _ = tokio::time::timeout(bounded, sink.send(WsMessage::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(bounded, sink.close()).await;
}

/// Writes `first` and whatever else is queued (up to a batch), then what a slow consumer is
/// owed, and flushes. `Ok(Some(..))`: a close frame came up; `Err`: the socket failed.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    first: Outbound,
    rx: &mut Receiver,
    outbox: &Outbox,
) -> Result<Option<WriterEnd>, ()> {
    const BATCH: usize = 256;
    let mut next = Some(first);
    let mut written = 0;
    while let Some(frame) = next.take() {
        outbox.sent(&frame);
        written += frame.count();
        match frame {
            Outbound::Text(t) => feed(sink, WsMessage::Text(t)).await?,
            Outbound::Ping => feed(sink, WsMessage::Ping(Default::default())).await?,
            Outbound::Batch(frames) => {
                for frame in frames.iter() {
                    feed(sink, WsMessage::Text(frame.clone())).await?;
                }
            }
            Outbound::Close(closing) => {
                let (code, reason) = *closing;
                sink.flush().await.map_err(|_| ())?;
                return Ok(Some(WriterEnd::Close(code, reason)));
            }
        }
        if written < BATCH {
            next = rx.try_recv();
        }
    }
    for owed in outbox.take_owed() {
        feed(sink, WsMessage::Text(owed)).await?;
    }
    sink.flush().await.map_err(|_| ())?;
    Ok(None)
}

/// Buffers one message for the next flush; `Err` if the socket failed.
async fn feed(sink: &mut SplitSink<WebSocket, WsMessage>, message: WsMessage) -> Result<(), ()> {
    sink.feed(message).await.map_err(|_| ())
}
