//! The HTTP side of the fake API server: listening (inside a network namespace if asked),
//! one thread per connection, request parsing, plain and chunked (watch) responses.

use super::handler::{expired, handle, Reply, Watch};
use super::{join_bounded, Request, Shared, IO_TIMEOUT, MAX_BODY_BYTES, MAX_HEADER_BYTES};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bind a listener, inside the named network namespace if given (from a short-lived thread
/// that enters it: a listening socket stays in the namespace it was created in).
pub(super) fn bind_in(netns: Option<&str>, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let Some(name) = netns else {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?; // the accept loop polls, so it can notice stop/down
        return Ok(l);
    };
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path)?;
        // SAFETY: setns on a valid namespace fd; it only changes this short-lived thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .join()
    .map_err(|_| std::io::Error::other("bind thread panicked"))?
}

pub(super) fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    netns: Option<String>,
    addr: SocketAddr,
) {
    let mut listener = Some(listener);
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let down = {
            let mut st = shared.lock();
            if st.stop {
                break;
            }
            st.listening = listener.is_some();
            st.down
        };
        if down && listener.is_some() {
            listener = None; // closed: new connections are refused
            continue;
        }
        if !down && listener.is_none() {
            match bind_in(netns.as_deref(), addr) {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    eprintln!("[fake-kube] cannot listen again on {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            continue;
        }
        let Some(l) = listener.as_ref() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match l.accept() {
            Ok((stream, _)) => {
                let s = shared.clone();
                if let Ok(h) = std::thread::Builder::new()
                    .name("fake-kube-conn".into())
                    .spawn(move || serve_conn(s, stream))
                {
                    workers.push(h);
                }
                workers.retain(|h| !h.is_finished());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(5);
    for h in workers {
        join_bounded(h, deadline.saturating_duration_since(Instant::now()));
    }
}

/// Serve one request on `stream`, then close it.
fn serve_conn(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let id = {
        let mut st = shared.lock();
        if st.down || st.stop {
            return;
        }
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(id, clone);
        id
    };
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    if let Some(req) = read_request(&mut BufReader::new(stream)) {
        let reply = handle(&shared, req);
        let _ = match reply {
            Reply::Full(code, body) => write_full(&mut out, code, &body),
            Reply::Watch(w) => stream_watch(&shared, &mut out, w),
        };
    }
    let _ = out.shutdown(Shutdown::Both);
    shared.lock().conns.remove(&id);
}

fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut head = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).ok()?;
        if n == 0 || head.len() > MAX_HEADER_BYTES {
            return None;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        head.push(l.to_owned());
    }
    let mut start = head.first()?.split_whitespace();
    let method = start.next()?.to_owned();
    let target = start.next()?.to_owned();
    let header = |name: &str| {
        head[1..].iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            if size == 0 || body.len() + size > MAX_BODY_BYTES {
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if len > MAX_BODY_BYTES {
            return None;
        }
        body.resize(len, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some(Request {
        method,
        target,
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn write_full(out: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        out,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason_phrase(code),
        body.len()
    )?;
    out.flush()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        _ => "Error",
    }
}

fn write_chunk(out: &mut TcpStream, event: &Value) -> std::io::Result<()> {
    let line = format!("{event}\n");
    write!(out, "{:x}\r\n{line}\r\n", line.len())?;
    out.flush()
}

/// Stream watch events until the deadline, the server going down/stopping, or a write error.
fn stream_watch(shared: &Shared, out: &mut TcpStream, w: Watch) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
          Cache-Control: no-cache, private\r\nConnection: close\r\n\r\n",
    )?;
    for e in &w.initial {
        write_chunk(out, e)?;
    }
    let mut sent = w.from;
    loop {
        let (batch, end) = {
            let mut st = shared.lock();
            loop {
                if st.stop || st.down {
                    return Ok(()); // cut without the final chunk, like a lost connection
                }
                if sent < st.history_start {
                    break (vec![expired()], true);
                }
                let batch: Vec<Value> = st
                    .history
                    .iter()
                    .filter(|e| e.rv > sent && e.resource == w.resource)
                    .filter(|e| {
                        w.name
                            .as_ref()
                            .is_none_or(|n| e.object["metadata"]["name"] == **n)
                    })
                    .map(|e| json!({"type": e.kind, "object": e.object}))
                    .collect();
                sent = st.rv;
                let now = Instant::now();
                if !batch.is_empty() || now >= w.deadline {
                    break (batch, now >= w.deadline);
                }
                st = shared
                    .changed
                    .wait_timeout(st, (w.deadline - now).min(Duration::from_secs(1)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        for e in &batch {
            write_chunk(out, e)?;
        }
        if end {
            break;
        }
    }
    if w.bookmarks {
        write_chunk(
            out,
            &json!({"type": "BOOKMARK", "object": {"kind": w.kind, "apiVersion": "v1",
            "metadata": {"resourceVersion": sent.to_string()}}}),
        )?;
    }
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// Decoded `key=value` pairs of a request target's query (`+` is a space, `%XX` a byte).
pub(super) fn query_pairs(target: &str) -> Vec<(String, String)> {
    let Some((_, q)) = target.split_once('?') else {
        return Vec::new();
    };
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}
