//! Batched publishing: changes queued while a publish is in flight go to Redis together.
//!
//! fred sends scripts one at a time per connection, and a script costs Redis tens of
//! microseconds, so one `EVALSHA` per change would cap a node at a few thousand changes per
//! second. One task takes every change waiting, splits them into runs of the same route (in
//! order), and publishes each run with one `EVALSHA` of [`PUBLISH_BATCH_LUA`], which does for
//! each message exactly what [`super::PUBLISH_LUA`] does for one. Stream entries and channel
//! payloads are the same either way; order is kept; each change costs at most one round trip.

use std::sync::Arc;

use fred::types::Value as RedisValue;
use fred::types::scripts::Script;
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

pub(super) struct Job {
    pub route: String,
    /// One or more messages, published together in one script call.
    pub json: Vec<String>,
    pub done: oneshot::Sender<Result<(), BrokerError>>,
}

pub(super) fn script() -> Script {
    Script::from_lua(PUBLISH_BATCH_LUA)
}

/// Publishes queued jobs, in order, a run of same-route jobs per script call.
pub(super) async fn run(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut waiting: Vec<Job> = Vec::new();
    while let Some(first) = jobs.recv().await {
        waiting.push(first);
        while waiting.len() < MAX_BATCH * 4 {
            match jobs.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
            }
        }
        let mut rest = std::mem::take(&mut waiting).into_iter().peekable();
        while let Some(job) = rest.next() {
            let mut size = job.json.len();
            let mut run = vec![job];
            while rest
                .peek()
                .is_some_and(|j| j.route == run[0].route && size + j.json.len() <= MAX_BATCH)
            {
                let next = rest.next().expect("peeked");
                size += next.json.len();
                run.push(next);
            }
            let result = publish_run(&shared, &run).await;
            for job in run {
                let _ = job.done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(BrokerError::Unavailable(e.to_string())),
                });
            }
        }
    }
}

async fn publish_run(shared: &Shared, run: &[Job]) -> Result<(), BrokerError> {
    shared.ensure_connected()?;
    let route = run[0].route.as_str();
    let count: usize = run.iter().map(|j| j.json.len()).sum();
    let mut args: Vec<RedisValue> = Vec::with_capacity(5 + count);
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
    let _id: String = shared
        .batch_script
        .evalsha_with_reload(shared.client(), shared.stream_key(route), args)
        .await
        .map_err(unavailable)?;
    Ok(())
}
