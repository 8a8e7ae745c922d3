//! Batched publishing: changes queued while a publish is in flight go to Redis together.
//!
//! A script costs Redis tens of microseconds, so one `EVALSHA` per change, each waiting for
//! the last, would cap a node at a few thousand changes per second. One task takes every
//! change waiting, splits them into runs of the same route (in order), and publishes each run
//! with one `EVALSHA` of [`PUBLISH_BATCH_LUA`], which does for each message exactly what
//! [`super::PUBLISH_LUA`] does for one; the calls are pipelined on one connection (Redis runs
//! them in the order sent). Stream entries and channel payloads are the same either way;
//! order is kept; each change costs at most one round trip.

use std::sync::Arc;

use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::Value as RedisValue;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::{mpsc, oneshot};

use super::{Shared, unavailable};
use crate::broker::BrokerError;

/// [`super::PUBLISH_LUA`] for several messages of one route (`ARGV[6..]`).
pub const PUBLISH_BATCH_LUA: &str = r#"-- dragon publish batch v1
local key = KEYS[1]
local prev = '0-0'
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #last > 0 then prev = last[1][1] end
local route = cjson.encode(ARGV[2])
local id = prev
for i = 6, #ARGV do
  id = redis.call('XADD', key, 'MAXLEN', ARGV[5], ARGV[3], '*', 'm', ARGV[i], 'p', prev)
  redis.call('PUBLISH', ARGV[1], '{"route":' .. route .. ',"position":"' .. id ..
    '","prev":"' .. prev .. '","message":' .. ARGV[i] .. '}')
  prev = id
end
local age = tonumber(ARGV[4])
if age > 0 then
  local ms = tonumber(string.match(id, '^(%d+)'))
  if ms > age then
    redis.call('XTRIM', key, 'MINID', ARGV[5], string.format('%.0f', ms - age))
  end
end
return id
"#;

/// The most messages one script call carries (a larger job goes alone).
const MAX_BATCH: usize = 256;

/// The most jobs taken from the queue at once; their runs go out in one pipeline.
const MAX_TAKEN: usize = MAX_BATCH * 16;

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
        while waiting.len() < MAX_TAKEN {
            match jobs.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
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

/// `jobs` in order, cut where the route changes or a run would pass [`MAX_BATCH`] messages.
fn split_runs(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut runs: Vec<Vec<Job>> = Vec::new();
    let mut size = 0;
    for job in jobs {
        match runs.last_mut() {
            Some(run) if run[0].route == job.route && size + job.json.len() <= MAX_BATCH => {
                size += job.json.len();
                run.push(job);
            }
            _ => {
                size = job.json.len();
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
