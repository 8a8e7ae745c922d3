//! Deleting the benchmark's Redis keys (with redis-cli, which comes with Redis).

use std::process::Command;

/// Deletes every key on `REDIS_URL` matching one of `patterns`; how many went.
pub(crate) fn redis_cleanup(patterns: &[String]) -> std::io::Result<i64> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut deleted = 0;
    for pattern in patterns {
        let scan = Command::new("redis-cli")
            .args(["-u", &url, "--scan", "--pattern", pattern])
            .output()?;
        let text = String::from_utf8_lossy(&scan.stdout).into_owned();
        let keys: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        for chunk in keys.chunks(500) {
            let del = Command::new("redis-cli")
                .args(["-u", &url, "DEL"])
                .args(chunk)
                .output()?;
            deleted += String::from_utf8_lossy(&del.stdout)
                .trim()
                .parse::<i64>()
                .unwrap_or(0);
        }
    }
    Ok(deleted)
}
