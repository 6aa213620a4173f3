//! How long a backend asks the agent to wait before it tries again: the HTTP
//! `Retry-After` header, or the gRPC `google.rpc.RetryInfo` detail of a
//! status. OTLP asks clients to honour both.
use std::time::Duration;

use prost::Message;

/// `Retry-After: <seconds>` or `Retry-After: <HTTP-date>` (RFC 9110 10.2.3),
/// the date taken against the agent's clock; a date already past means
/// "now". Anything else is ignored (exponential backoff applies).
pub fn http_retry_after(value: &str) -> Option<Duration> {
    http_retry_after_at(value, std::time::SystemTime::now())
}

fn http_retry_after_at(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

// The few messages of google/rpc/status.proto and error_details.proto
// needed here, declared by hand rather than pulling in another crate.

#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The retry delay in a status's `grpc-status-details-bin`, if any.
pub fn grpc_retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    let info = status.details.iter().find(|d| d.type_url == RETRY_INFO)?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    if delay.seconds < 0 || delay.nanos < 0 {
        return None;
    }
    Some(Duration::new(delay.seconds as u64, delay.nanos as u32))
}

/// `grpc-status-details-bin` carrying a RetryInfo of `delay`.
#[cfg(test)]
fn encode_retry_info(code: i32, delay: Duration) -> Vec<u8> {
    RpcStatus {
        code,
        message: String::new(),
        details: vec![Any {
            type_url: RETRY_INFO.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: delay.as_secs() as i64,
                    nanos: delay.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_or_http_date() {
        assert_eq!(http_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(http_retry_after("-1"), None);
        assert_eq!(http_retry_after("soon"), None);
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        // The three date formats RFC 9110 makes a recipient accept.
        for later in [
            "Wed, 21 Oct 2015 07:28:07 GMT",
            "Wednesday, 21-Oct-15 07:28:07 GMT",
            "Wed Oct 21 07:28:07 2015",
        ] {
            assert_eq!(
                http_retry_after_at(later, now),
                Some(Duration::from_secs(7)),
                "{later}"
            );
        }
        assert_eq!(
            http_retry_after_at("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            http_retry_after_at("Wed, 32 Oct 2015 07:28:00 GMT", now),
            None
        );
    }

    #[test]
    fn retry_info_round_trip_and_garbage() {
        let bytes = encode_retry_info(14, Duration::from_millis(1500));
        assert_eq!(grpc_retry_delay(&bytes), Some(Duration::from_millis(1500)));
        assert_eq!(grpc_retry_delay(&[]), None);
        assert_eq!(grpc_retry_delay(&[0xff, 0xff, 0xff]), None);
        let other = RpcStatus {
            code: 14,
            message: "x".into(),
            details: vec![Any {
                type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                value: vec![1, 2],
            }],
        }
        .encode_to_vec();
        assert_eq!(grpc_retry_delay(&other), None);
    }
}
