//! A static file server on loopback for a built example app (the demo):
//! GET and HEAD only, files under one folder, the content types a browser
//! needs (`application/wasm` for streaming instantiation).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

/// Serve `root` on 127.0.0.1 (any free port) from a background thread
/// that lives as long as the process; returns the base URL.
pub(crate) fn serve_dir(root: &Path) -> Result<String, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = answer(&root, stream);
            });
        }
    });
    Ok(format!("http://{addr}/"))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// The file under `root` for a request path, if it stays inside `root`.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let mut file = root.to_path_buf();
    for part in Path::new(path.trim_start_matches('/')).components() {
        match part {
            Component::Normal(name) => file.push(name),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if path.ends_with('/') || file == root {
        file.push("index.html");
    }
    Some(file)
}

fn answer(root: &Path, mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The rest of the head: read and ignore.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let found = match method {
        "GET" | "HEAD" => resolve(root, target)
            .and_then(|file| std::fs::read(&file).ok().map(|body| (file, body))),
        _ => None,
    };
    let (status, kind, body) = match found {
        Some((file, body)) => ("200 OK", content_type(&file), body),
        None => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

/// GET `url` (an `http://127.0.0.1:…/path` this process serves): status
/// line and body, for the demo's check that the page is there.
pub(crate) fn get(url: &str) -> Result<(String, Vec<u8>), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the response head")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.lines().next().unwrap_or("").to_owned();
    Ok((status, response[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/app");
        assert_eq!(
            resolve(root, "/"),
            Some(PathBuf::from("/srv/app/index.html"))
        );
        assert_eq!(
            resolve(root, "/?server=ws://x"),
            Some(PathBuf::from("/srv/app/index.html"))
        );
        assert_eq!(
            resolve(root, "/assets/a.js"),
            Some(PathBuf::from("/srv/app/assets/a.js"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/assets/../../x"), None);
    }

    #[test]
    fn serves_files_with_their_types() {
        let dir = std::env::temp_dir().join(format!("xtask-serve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("assets")).expect("temp dir");
        std::fs::write(dir.join("index.html"), "<p>hi</p>").expect("write");
        std::fs::write(dir.join("assets/m.wasm"), [0u8, 97, 115, 109]).expect("write");
        let base = serve_dir(&dir).expect("serve");
        let (status, body) = get(&base).expect("index");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, b"<p>hi</p>");
        let (status, body) = get(&format!("{base}assets/m.wasm")).expect("wasm");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, [0u8, 97, 115, 109]);
        let (status, _) = get(&format!("{base}missing.js")).expect("404");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
