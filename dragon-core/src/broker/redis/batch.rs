//! Batched publishing: changes queued while a publish is in flight go to Redis together.
//!
//! A script costs Redis tens of microseconds, so one `EVALSHA` per change, each waiting for
//! the last, would cap a node at a few thousand changes per second. One task takes every
//! change waiting, splits them into runs of the same route (in order), and publishes each run
//! with one `EVALSHA` of [`PUBLISH_BATCH_LUA`], which adds the stream entries exactly as
//! [`super::PUBLISH_LUA`] does for one and publishes the run as one channel payload; the calls
//! are pipelined on one connection (Redis runs them in the order sent). Order is kept; each
//! change costs at most one round trip; a burst reaches every node as one run, so each
//! connection's share of it goes out in one socket write rather than one per slice.

use std::sync::Arc;

use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::Value as RedisValue;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::{mpsc, oneshot};

use super::{Shared, unavailable};
use crate::broker::BrokerError;

/// [`super::PUBLISH_LUA`] for several messages of one route (`ARGV[6..]`): the same stream
/// entries, and ONE channel payload for all of them,
/// `{"route", "prev", "positions": [...], "messages": [...]}` (each entry's `prev` is the
/// position before it), so a node reads a batch as one frame and hands it to its hub as one
/// run rather than message by message.
pub const PUBLISH_BATCH_LUA: &str = r#"-- dragon publish batch v2
local key = KEYS[1]
local prev = '0-0'
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #last > 0 then prev = last[1][1] end
local first = prev
local id = prev
local positions = {}
for i = 6, #ARGV do
  id = redis.call('XADD', key, 'MAXLEN', ARGV[5], ARGV[3], '*', 'm', ARGV[i], 'p', prev)
  positions[#positions + 1] = '"' .. id .. '"'
  prev = id
end
redis.call('PUBLISH', ARGV[1], '{"route":' .. cjson.encode(ARGV[2]) .. ',"prev":"' .. first ..
  '","positions":[' .. table.concat(positions, ',') .. '],"messages":[' ..
  table.concat(ARGV, ',', 6, #ARGV) .. ']}')
local age = tonumber(ARGV[4])
if age > 0 then
  local ms = tonumber(string.match(id, '^(%d+)'))
  if ms > age then
    redis.call('XTRIM', key, 'MINID', ARGV[5], string.format('%.0f', ms - age))
  end
end
return id
"#;

/// The most messages one script call carries (a larger job goes alone): a burst of changes
/// reaches the nodes as one run (their fan-out then batches as it does in memory), while one
/// call keeps Redis busy for a few milliseconds at most.
const MAX_BATCH: usize = 2048;

/// How long the publisher keeps gathering a burst while every turn brings more: long enough
/// for a burst of a few thousand changes (a few microseconds each to serialize and queue) to
/// go out whole, since a burst cut in two reaches every node as two runs and costs most
/// connections a second socket write. Gathering stops at the first turn that brings nothing,
/// so a lone change never waits for it.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The most JSON one script call carries (a larger job goes alone): a call's channel payload
/// is about this big, well inside Redis's output limits for a subscriber.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The most jobs taken from the queue at once; their runs go out in one pipeline.
const MAX_TAKEN: usize = MAX_BATCH * 4;

pub(super) struct Job {
    pub route: String,
    /// One or more messages, published together in one script call.
    pub json: Vec<String>,
    pub done: oneshot::Sender<Result<(), BrokerError>>,
}

pub(super) fn script() -> Script {
    Script::from_lua(PUBLISH_BATCH_LUA)
}

/// Publishes queued jobs, in order: everything waiting, split into runs of one route, each
/// run one script call, all calls pipelined on one connection.
pub(super) async fn run(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut waiting: Vec<Job> = Vec::new();
    while let Some(first) = jobs.recv().await {
        waiting.push(first);
        // Turns for the tasks that are ready first, as long as they bring more (up to a
        // script call's worth, for at most `GATHER`): a burst of changes, many requests at
        // once, goes out as one call, and so reaches every node as one run, instead of in
        // slices cut by the round trips.
        let since = tokio::time::Instant::now();
        loop {
            tokio::task::yield_now().await;
            let before = waiting.len();
            while waiting.len() < MAX_TAKEN {
                match jobs.try_recv() {
                    Ok(job) => waiting.push(job),
                    Err(_) => break,
                }
            }
            if waiting.len() == before || waiting.len() >= MAX_BATCH || since.elapsed() >= GATHER {
                break;
            }
        }
        let runs = split_runs(std::mem::take(&mut waiting));
        let results = publish_runs(&shared, &runs).await;
        for (run, result) in runs.into_iter().zip(results) {
            for job in run {
                let _ = job.done.send(result.clone());
            }
        }
    }
}

/// `jobs` in order, cut where the route changes or a run would pass [`MAX_BATCH`] messages
/// or [`MAX_BATCH_BYTES`] of JSON.
fn split_runs(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut runs: Vec<Vec<Job>> = Vec::new();
    let (mut count, mut bytes) = (0, 0);
    for job in jobs {
        let job_bytes: usize = job.json.iter().map(String::len).sum();
        match runs.last_mut() {
            Some(run)
                if run[0].route == job.route
                    && count + job.json.len() <= MAX_BATCH
                    && bytes + job_bytes <= MAX_BATCH_BYTES =>
            {
                count += job.json.len();
                bytes += job_bytes;
                run.push(job);
            }
            _ => {
                (count, bytes) = (job.json.len(), job_bytes);
                runs.push(vec![job]);
            }
        }
    }
    runs
}

/// One result per run. The calls go out together on one connection, so Redis runs them in
/// this order and each route's stream and channel keep the order of the queue; waiting for
/// each reply before sending the next call would make a burst reach the nodes in as many
/// slices as it has runs.
async fn publish_runs(shared: &Shared, runs: &[Vec<Job>]) -> Vec<Result<(), BrokerError>> {
    let failed = |e: &BrokerError| runs.iter().map(|_| Err(e.clone())).collect();
    if let Err(e) = shared.ensure_connected() {
        return failed(&e);
    }
    let client = shared.client();
    let pipeline = client.pipeline();
    for run in runs {
        let queued: Result<(), _> = pipeline.custom(evalsha(), call(shared, run)).await;
        if let Err(e) = queued {
            return failed(&unavailable(e));
        }
    }
    let mut results: Vec<Result<RedisValue, FredError>> = pipeline.try_all().await;
    results.resize_with(runs.len(), || {
        Err(FredError::new(
            ErrorKind::IO,
            "no reply to a pipelined publish",
        ))
    });
    // A script cache emptied under us (a Redis restart): a refused call changed nothing, so
    // the script is loaded and the refused calls made again, in order.
    let noscript = |r: &Result<RedisValue, FredError>| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT"));
    if results.iter().any(noscript) {
        if let Err(e) = shared.batch_script.load(client).await {
            return failed(&unavailable(e));
        }
        for (run, result) in runs.iter().zip(results.iter_mut()) {
            if noscript(result) {
                *result = client.custom(evalsha(), call(shared, run)).await;
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.map(drop).map_err(unavailable))
        .collect()
}

/// `EVALSHA`, spelled out: fred's pipelines have no `evalsha`. Routed on a cluster by the
/// stream key, its third argument.
fn evalsha() -> CustomCommand {
    CustomCommand::new("EVALSHA", ClusterHash::Offset(2), false)
}

/// The arguments of one run's script call: `sha 1 key channel route len age trim json..`.
fn call(shared: &Shared, run: &[Job]) -> Vec<RedisValue> {
    let route = run[0].route.as_str();
    let count: usize = run.iter().map(|j| j.json.len()).sum();
    let mut args: Vec<RedisValue> = Vec::with_capacity(8 + count);
    args.push(shared.batch_script.sha1().clone().into());
    args.push(1.into());
    args.push(shared.stream_key(route).into());
    args.push(shared.channel.as_str().into());
    args.push(route.into());
    args.push(shared.history_len.as_str().into());
    args.push(shared.history_age_ms.as_str().into());
    args.push(shared.trim.into());
    args.extend(
        run.iter()
            .flat_map(|j| &j.json)
            .map(|json| RedisValue::from(json.as_str())),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(route: &str, messages: usize, bytes_each: usize) -> Job {
        Job {
            route: route.into(),
            json: vec!["x".repeat(bytes_each); messages],
            done: oneshot::channel().0,
        }
    }

    fn shape(runs: &[Vec<Job>]) -> Vec<(String, usize)> {
        runs.iter()
            .map(|r| (r[0].route.clone(), r.iter().map(|j| j.json.len()).sum()))
            .collect()
    }

    fn expect(runs: &[(&str, usize)]) -> Vec<(String, usize)> {
        runs.iter().map(|&(r, n)| (r.to_owned(), n)).collect()
    }

    #[test]
    fn runs_are_cut_at_a_route_change_a_message_count_and_a_size() {
        let jobs = vec![
            job("a", 1, 10),
            job("a", 2, 10),
            job("b", 1, 10),
            job("a", 1, 10),
        ];
        assert_eq!(
            shape(&split_runs(jobs)),
            expect(&[("a", 3), ("b", 1), ("a", 1)])
        );

        let jobs = (0..MAX_BATCH + 1).map(|_| job("a", 1, 10)).collect();
        assert_eq!(
            shape(&split_runs(jobs)),
            expect(&[("a", MAX_BATCH), ("a", 1)])
        );

        let half = MAX_BATCH_BYTES / 2;
        let jobs = vec![job("a", 1, half), job("a", 1, half), job("a", 1, 1)];
        assert_eq!(
            shape(&split_runs(jobs)),
            expect(&[("a", 2), ("a", 1)]),
            "bytes"
        );

        let jobs = vec![job("a", 1, 1), job("a", MAX_BATCH + 5, 1), job("a", 1, 1)];
        let alone = expect(&[("a", 1), ("a", MAX_BATCH + 5), ("a", 1)]);
        assert_eq!(shape(&split_runs(jobs)), alone, "a larger job goes alone");
    }
}
