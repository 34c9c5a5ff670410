//! Socket.IO v5 text packets, inside Engine.IO message packets (`4...`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// Client -> server namespace connect, with the `auth` payload.
    Connect {
        ns: String,
        auth: Option<Value>,
    },
    /// Server -> client: the namespace accepted the socket.
    ConnectOk {
        ns: String,
    },
    /// Server -> client: refused; `message` is the reason.
    ConnectError {
        ns: String,
        message: String,
    },
    Disconnect {
        ns: String,
    },
    Event {
        ns: String,
        id: Option<u64>,
        event: String,
        data: Value,
    },
    Ack {
        ns: String,
        id: u64,
        data: Value,
    },
}

impl Packet {
    /// The Engine.IO message text (leading `4` included).
    pub fn encode(&self) -> String {
        let prefix = |kind: char, ns: &str| if ns == "/" { format!("4{kind}") } else { format!("4{kind}{ns},") };
        match self {
            Self::Connect { ns, auth } => {
                let mut text = prefix('0', ns);
                if let Some(auth) = auth {
                    text.push_str(&auth.to_string());
                }
                text
            }
            Self::ConnectOk { ns } => prefix('0', ns) + "{}",
            Self::ConnectError { ns, message } => {
                prefix('4', ns) + &serde_json::json!({"message": message}).to_string()
            }
            Self::Disconnect { ns } => prefix('1', ns),
            Self::Event { ns, id, event, data } => {
                let id = id.map(|id| id.to_string()).unwrap_or_default();
                format!("{}{id}{}", prefix('2', ns), Value::Array(vec![Value::String(event.clone()), data.clone()]))
            }
            Self::Ack { ns, id, data } => format!("{}{id}{}", prefix('3', ns), Value::Array(vec![data.clone()])),
        }
    }

    /// Decodes the Socket.IO part (after the Engine.IO `4`).
    pub fn decode(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or("empty packet")?;
        let mut rest = chars.as_str();
        let ns = if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            let ns = rest[..end].to_owned();
            rest = rest.get(end + 1..).unwrap_or("");
            ns
        } else {
            "/".to_owned()
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = if digits > 0 { Some(rest[..digits].parse::<u64>().map_err(|e| e.to_string())?) } else { None };
        let body = &rest[digits..];
        let json = || -> Result<Value, String> {
            if body.is_empty() { Ok(Value::Null) } else { serde_json::from_str(body).map_err(|e| e.to_string()) }
        };
        match kind {
            '0' => Ok(Self::ConnectOk { ns }),
            '1' => Ok(Self::Disconnect { ns }),
            '2' => {
                let Value::Array(mut args) = json()? else { return Err("event payload is not an array".into()) };
                if args.is_empty() {
                    return Err("event without a name".into());
                }
                let event = match args.remove(0) {
                    Value::String(name) => name,
                    other => return Err(format!("event name is not a string: {other}")),
                };
                Ok(Self::Event { ns, id, event, data: args.into_iter().next().unwrap_or(Value::Null) })
            }
            '3' => {
                let Value::Array(args) = json()? else { return Err("ack payload is not an array".into()) };
                let id = id.ok_or("ack without an id")?;
                Ok(Self::Ack { ns, id, data: args.into_iter().next().unwrap_or(Value::Null) })
            }
            '4' => {
                let message = json()?.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
                Ok(Self::ConnectError { ns, message })
            }
            other => Err(format!("unsupported packet type {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn round_trips() {
        let packets = [
            Packet::Event { ns: "/chat".into(), id: Some(12), event: "send".into(), data: json!({"a": 1}) },
            Packet::Event { ns: "/chat".into(), id: None, event: "typing".into(), data: json!({}) },
            Packet::Ack { ns: "/chat".into(), id: 3, data: json!({"ok": true}) },
            Packet::ConnectError { ns: "/chat".into(), message: "TOKEN_INVALID".into() },
            Packet::Disconnect { ns: "/notifications".into() },
        ];
        for packet in packets {
            assert_eq!(Packet::decode(&packet.encode()[1..]).unwrap(), packet);
        }
    }

    #[test]
    fn decodes_server_packets() {
        assert_eq!(Packet::decode("0/chat,{\"sid\":\"x\"}").unwrap(), Packet::ConnectOk { ns: "/chat".into() });
        assert_eq!(
            Packet::decode("2/chat,[\"message\",{\"seq\":1}]").unwrap(),
            Packet::Event { ns: "/chat".into(), id: None, event: "message".into(), data: json!({"seq": 1}) }
        );
        assert!(Packet::decode("2/chat,{}").is_err());
    }
}
