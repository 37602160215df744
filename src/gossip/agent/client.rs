//! A client of Serf's agent RPC, blocking, for muster's own commands (`muster event`,
//! `muster query`, `muster keys`, `muster force-leave`): it speaks to a running muster (or a
//! Serf agent) exactly as the `serf` CLI does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::super::msgpack::{self, DecodeError, Value};
use super::super::rpc::MAX_OBJECT;

/// A connection that has shaken hands (and given the auth key, if any).
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    seq: u64,
}

/// A string as the RPC writes it.
pub fn raw(s: &str) -> Value {
    Value::Raw(s.as_bytes().to_vec())
}

impl Client {
    /// Connects to `addr` (`host:port`) and shakes hands; every read waits at most `timeout`.
    pub fn connect(addr: &str, auth: Option<&str>, timeout: Duration) -> Result<Client, String> {
        let stream = TcpStream::connect(addr).map_err(|e| {
            format!("cannot reach the agent RPC at {addr}: {e} (is muster running with [gossip] rpc_addr there?)")
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let mut c = Client {
            stream,
            buf: Vec::new(),
            seq: 0,
        };
        let seq = c.send("handshake", Some(Value::map([("Version", Value::Uint(1))])))?;
        c.header(seq)?;
        if let Some(key) = auth {
            let seq = c.send("auth", Some(Value::map([("AuthKey", raw(key))])))?;
            c.header(seq)?;
        }
        Ok(c)
    }

    /// Sets how long a read may wait (a query waits its whole timeout).
    pub fn read_timeout(&mut self, timeout: Duration) {
        let _ = self.stream.set_read_timeout(Some(timeout));
    }

    /// Sends a request; returns its `Seq`.
    pub fn send(&mut self, command: &str, body: Option<Value>) -> Result<u64, String> {
        self.seq += 1;
        let mut out = msgpack::to_vec(&Value::map([
            ("Command", raw(command)),
            ("Seq", Value::Uint(self.seq)),
        ]));
        if let Some(b) = body {
            msgpack::encode(&b, &mut out);
        }
        self.stream
            .write_all(&out)
            .map_err(|e| format!("cannot send {command}: {e}"))?;
        Ok(self.seq)
    }

    /// The next object the agent sent.
    pub fn object(&mut self) -> Result<Value, String> {
        let mut chunk = [0u8; 8192];
        loop {
            match msgpack::decode(&self.buf) {
                Ok((v, used)) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Err(DecodeError::Truncated(_)) if self.buf.len() <= MAX_OBJECT => {}
                Err(e) => return Err(format!("the agent's answer is not Serf's RPC: {e}")),
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("no answer from the agent: {e}"))?;
            if n == 0 {
                return Err("the agent closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the header of the answer to `seq`: `Err` with the agent's error, if any.
    pub fn header(&mut self, seq: u64) -> Result<(), String> {
        let h = self.object()?;
        if h.get("Seq").and_then(Value::as_u64) != Some(seq) {
            return Err(format!("an answer to another request: {h}"));
        }
        match h.get("Error").and_then(Value::as_str) {
            None | Some("") => Ok(()),
            Some(e) => Err(e.to_owned()),
        }
    }
}
