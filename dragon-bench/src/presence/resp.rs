//! Deleting the benchmark's Redis keys with a few RESP commands on a plain socket.

use super::*;

// ---------------------------------------------------------------------------------------
// Deleting the benchmark's Redis keys (a few RESP commands on a plain socket).

pub(super) enum Resp {
    Text(String),
    Int(i64),
    Array(Vec<Resp>),
}

pub(super) fn resp_send(w: &mut impl Write, args: &[&str]) -> std::io::Result<()> {
    let mut buf = format!("*{}\r\n", args.len());
    for a in args {
        buf.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    w.write_all(buf.as_bytes())
}

pub(super) fn resp_read(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let bad = |m: String| std::io::Error::other(m);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Resp::Text(rest.to_owned())),
        "-" => Err(bad(format!("Redis: {rest}"))),
        ":" => Ok(Resp::Int(rest.parse().map_err(|_| bad(line.to_owned()))?)),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad(line.to_owned()))?;
            if len < 0 {
                return Ok(Resp::Text(String::new()));
            }
            let mut data = vec![0u8; len as usize + 2];
            r.read_exact(&mut data)?;
            data.truncate(len as usize);
            Ok(Resp::Text(String::from_utf8_lossy(&data).into_owned()))
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad(line.to_owned()))?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                items.push(resp_read(r)?);
            }
            Ok(Resp::Array(items))
        }
        _ => Err(bad(format!("unexpected reply {line:?}"))),
    }
}

/// Deletes every key matching one of `patterns`; how many went.
pub(super) fn redis_cleanup(patterns: &[String]) -> std::io::Result<i64> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rest = url.split("://").nth(1).unwrap_or(&url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let stream = std::net::TcpStream::connect(hostport)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = stream.try_clone()?;
    let mut r = std::io::BufReader::new(stream);
    let mut deleted = 0;
    for pattern in patterns {
        let mut cursor = "0".to_owned();
        loop {
            resp_send(
                &mut w,
                &["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"],
            )?;
            let Resp::Array(mut reply) = resp_read(&mut r)? else {
                return Err(std::io::Error::other("SCAN answered no array"));
            };
            let keys: Vec<String> = match reply.pop() {
                Some(Resp::Array(keys)) => keys
                    .into_iter()
                    .filter_map(|k| match k {
                        Resp::Text(k) => Some(k),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if !keys.is_empty() {
                let mut cmd = vec!["DEL"];
                cmd.extend(keys.iter().map(String::as_str));
                resp_send(&mut w, &cmd)?;
                if let Resp::Int(n) = resp_read(&mut r)? {
                    deleted += n;
                }
            }
            cursor = match reply.pop() {
                Some(Resp::Text(c)) => c,
                _ => "0".to_owned(),
            };
            if cursor == "0" {
                break;
            }
        }
    }
    Ok(deleted)
}
