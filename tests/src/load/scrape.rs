//! Reading a relay's `GET /metrics` from outside, as the benchmarks that run the relay as a
//! process do.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /metrics` of the relay at `addr`: the whole response as text (empty when it does not
/// answer within 2 s).
pub async fn metrics(addr: SocketAddr) -> String {
    let fetch = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await?;
        socket
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut text = String::new();
        socket.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The value of the unlabelled sample `name` in a metrics text, if it has one.
pub fn value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (sample, value) = line.split_once(' ')?;
        (sample == name)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unlabelled_samples_only() {
        let text = "# HELP a_total x\na_total 3\na_total_x 9\nb{t=\"ws\"} 4\n";
        assert_eq!(value(text, "a_total"), Some(3.0));
        assert_eq!(value(text, "b"), None);
        assert_eq!(value(text, "c"), None);
    }
}
