//! The HTTP API of a node (the README's "HTTP API" section): routing, argument
//! checks, and how engine errors become status codes.
//!
//! A write that fails says whether it may still happen: `503` with `"applied": false`
//! when it certainly did not and will not take effect (no leader, shutting down, the
//! node stopped before it was proposed, busy, or raft dropped it), `504` with
//! `"applied": "unknown"` when it was proposed and its outcome is unknown (timeout,
//! leader lost, node stopped while waiting). An error caused by the node's fatal stop
//! also carries the cause as `"fatal"` (see [`fatal_json`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel_engine::{ConfState, Db, Error, Fatal};
use serde_json::{json, Value};

use super::http::{Handler, Request, Response};

/// Longest key, in bytes after percent-decoding.
pub const MAX_KEY_BYTES: usize = 4096;

// A node whose applied index trails its commit index by more than this is not
// "caught up" for /health.
const HEALTH_MAX_APPLY_LAG: u64 = 1_000;

/// The API of one node.
pub struct Api {
    /// The node.
    pub db: Db,
    /// Largest value accepted by `PUT /kv/{key}`.
    pub max_value_bytes: u64,
    /// Set once shutdown began: writes are refused as certainly not applied.
    pub shutting_down: Arc<AtomicBool>,
}

fn not_applied() -> Option<Value> {
    Some(Value::Bool(false))
}

fn unknown() -> Option<Value> {
    Some(Value::String("unknown".into()))
}

/// The cause of a node's fatal stop as JSON: `{"kind": ..., "thread": ..., "detail":
/// ...}`, `kind` one of `panic`, `log_write`, `raft`, `state_machine`, `snapshot`,
/// `invariant`.
pub fn fatal_json(f: &Fatal) -> Value {
    json!({ "kind": f.kind.as_str(), "thread": f.thread, "detail": f.detail })
}

/// How an engine error is answered. `write` adds the `applied` field; an error that
/// names the node's fatal stop adds it as `fatal`.
fn error_response(e: &Error, write: bool) -> Response {
    let msg = e.to_string();
    let (status, message, applied) = match e {
        Error::NotLeader { leader: None } => (
            503,
            "no leader is known; retry shortly".to_string(),
            not_applied(),
        ),
        Error::NotLeader { leader: Some(l) } => (
            503,
            format!("this node is not the leader; send this request to node {l}"),
            not_applied(),
        ),
        // A stopped node never proposed the request; raft never appended a dropped one.
        Error::Busy(_) | Error::ProposalLost(_) | Error::ProposalDropped(_) | Error::Stopped(_) => {
            (503, msg, not_applied())
        }
        Error::TooLarge { .. } => (413, msg, not_applied()),
        Error::Timeout(_) | Error::Indeterminate(_) => (504, msg, unknown()),
        Error::MembershipRefused(_) => (409, msg, not_applied()),
        Error::UnknownNode(_) => (404, msg, not_applied()),
        Error::Config(_) => (400, msg, not_applied()),
        // Committed but skipped by every replica: a server-side codec bug.
        Error::Undecodable { .. } => (500, msg, not_applied()),
        _ => (500, msg, unknown()),
    };
    let mut v = json!({ "error": message });
    if let Error::NotLeader { leader: Some(l) } = e {
        v["leader"] = json!(l);
    }
    if let (true, Some(applied)) = (write, applied) {
        v["applied"] = applied;
    }
    if let Some(fatal) = e.fatal() {
        v["fatal"] = fatal_json(fatal);
    }
    Response::json(status, &v)
}

/// Percent-decodes a path segment. `None` on a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn method_not_allowed(allowed: &str) -> Response {
    Response::error(405, &format!("method not allowed; use {allowed}"), None)
}

fn role_name(db: &Db, st: &keel_engine::Status) -> &'static str {
    if st.learners.contains(&db.id()) {
        return "learner";
    }
    match st.role {
        keel_engine::Role::Leader => "leader",
        keel_engine::Role::Follower => "follower",
        keel_engine::Role::Candidate => "candidate",
        keel_engine::Role::PreCandidate => "pre-candidate",
    }
}

impl Handler for Api {
    fn handle(&self, req: Request) -> Response {
        let path = req.path.as_str();
        if let Some(key) = path.strip_prefix("/kv/") {
            return self.kv(&req, key);
        }
        match path {
            "/status" => match req.method.as_str() {
                "GET" => self.status(),
                _ => method_not_allowed("GET"),
            },
            "/metrics" => match req.method.as_str() {
                "GET" => Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: self.db.metrics_text().into_bytes(),
                },
                _ => method_not_allowed("GET"),
            },
            "/health" => match req.method.as_str() {
                "GET" => self.health(),
                _ => method_not_allowed("GET"),
            },
            "/cluster/members" => match req.method.as_str() {
                "POST" => self.add_member(&req.body),
                _ => method_not_allowed("POST"),
            },
            "/cluster/leader" => match req.method.as_str() {
                "POST" => self.transfer(&req.body),
                _ => method_not_allowed("POST"),
            },
            _ => {
                if let Some(id) = path.strip_prefix("/cluster/members/") {
                    return match req.method.as_str() {
                        "DELETE" => self.remove_member(id),
                        _ => method_not_allowed("DELETE"),
                    };
                }
                Response::error(404, &format!("no such route: {path}"), None)
            }
        }
    }
}

impl Api {
    fn kv(&self, req: &Request, raw_key: &str) -> Response {
        let write = matches!(req.method.as_str(), "PUT" | "DELETE");
        let applied = |v: Option<Value>| if write { v } else { None };
        let Some(key) = percent_decode(raw_key) else {
            return Response::error(
                400,
                "malformed percent-encoding in the key",
                applied(not_applied()),
            );
        };
        if key.is_empty() {
            return Response::error(400, "the key must not be empty", applied(not_applied()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Response::error(
                413,
                &format!(
                    "the key has {} bytes; at most {MAX_KEY_BYTES} are allowed",
                    key.len()
                ),
                applied(not_applied()),
            );
        }
        if write && self.shutting_down.load(Ordering::Acquire) {
            return Response::error(503, "the node is shutting down", not_applied());
        }
        match req.method.as_str() {
            "PUT" => {
                if req.body.len() as u64 > self.max_value_bytes {
                    return Response::error(
                        413,
                        &format!(
                            "the value has {} bytes; at most {} are allowed",
                            req.body.len(),
                            self.max_value_bytes
                        ),
                        not_applied(),
                    );
                }
                match self.db.put(&key, &req.body) {
                    Ok(()) => Response::empty(204),
                    Err(e) => error_response(&e, true),
                }
            }
            "DELETE" => match self.db.delete(&key) {
                Ok(()) => Response::empty(204),
                Err(e) => error_response(&e, true),
            },
            "GET" => {
                let serializable = match req.query.as_deref() {
                    None | Some("") => false,
                    Some(q) => match query_param(q, "consistency") {
                        Some("serializable") => true,
                        Some("linearizable") | None => false,
                        Some(_) => {
                            return Response::error(
                                400,
                                "consistency must be serializable or linearizable",
                                None,
                            )
                        }
                    },
                };
                let got = if serializable {
                    self.db.get_local(&key)
                } else {
                    self.db.get(&key)
                };
                match got {
                    Ok(Some(v)) => Response {
                        status: 200,
                        content_type: "application/octet-stream",
                        body: v,
                    },
                    Ok(None) => Response::error(404, "key not found", None),
                    Err(e) => error_response(&e, false),
                }
            }
            _ => method_not_allowed("GET, PUT or DELETE"),
        }
    }

    fn status(&self) -> Response {
        let st = self.db.status();
        Response::json(
            200,
            &json!({
                "id": st.id,
                "role": role_name(&self.db, &st),
                "term": st.term,
                "leader": st.leader.unwrap_or(0),
                "commit_index": st.commit_index,
                "applied_index": st.applied_index,
                "first_index": st.first_index,
                "last_index": st.last_index,
                "snapshot_index": st.snapshot_index,
                "voters": st.voters,
                "learners": st.learners,
                "fatal": st.fatal.as_ref().map(fatal_json),
            }),
        )
    }

    fn health(&self) -> Response {
        let st = self.db.status();
        let lag = st.commit_index.saturating_sub(st.applied_index);
        let why = if let Some(fatal) = &st.fatal {
            Some(format!("the node stopped: {fatal}"))
        } else if self.shutting_down.load(Ordering::Acquire) {
            Some("the node is shutting down".to_string())
        } else if !st.voters.contains(&st.id) && !st.learners.contains(&st.id) {
            Some("this node is not a member of the cluster".to_string())
        } else if st.leader.is_none() {
            Some("no leader".to_string())
        } else if lag > HEALTH_MAX_APPLY_LAG {
            Some(format!("applying: {lag} committed entries not applied yet"))
        } else {
            None
        };
        match why {
            None => Response::json(200, &json!({ "health": "ok", "leader": st.leader })),
            Some(why) => {
                let mut v = json!({ "health": "unavailable", "error": why });
                if let Some(fatal) = &st.fatal {
                    v["fatal"] = fatal_json(fatal);
                }
                Response::json(503, &v)
            }
        }
    }

    fn add_member(&self, body: &[u8]) -> Response {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Response::error(
                400,
                "the body must be JSON: {\"id\":4,\"addr\":\"HOST:PORT\",\"learner\":true}",
                not_applied(),
            );
        };
        let Some(id) = v.get("id").and_then(Value::as_u64).filter(|&i| i != 0) else {
            return Response::error(400, "\"id\" must be a positive number", not_applied());
        };
        let learner = match v.get("learner") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Response::error(400, "\"learner\" must be true or false", not_applied())
            }
        };
        let addr = match v.get("addr") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if super::peers::parse_peers(&format!("{id}={s}")).is_ok() => {
                Some(s.as_str())
            }
            Some(_) => return Response::error(400, "\"addr\" must be HOST:PORT", not_applied()),
        };
        let st = self.db.status();
        let is_member = st.voters.contains(&id) || st.learners.contains(&id);
        if !is_member && addr.is_none() {
            return Response::error(
                400,
                &format!("node {id} is new: give its peer address as \"addr\""),
                not_applied(),
            );
        }
        self.change(|db| {
            if learner {
                db.add_learner(id, addr)
            } else {
                db.add_member(id, addr)
            }
        })
    }

    fn remove_member(&self, raw_id: &str) -> Response {
        let Some(id) = raw_id.parse::<u64>().ok().filter(|&i| i != 0) else {
            return Response::error(
                400,
                "the member id must be a positive number",
                not_applied(),
            );
        };
        self.change(|db| db.remove_member(id))
    }

    fn change(&self, change: impl FnOnce(&Db) -> keel_engine::Result<ConfState>) -> Response {
        if self.shutting_down.load(Ordering::Acquire) {
            return Response::error(503, "the node is shutting down", not_applied());
        }
        match change(&self.db) {
            Ok(cs) => Response::json(
                200,
                &json!({ "voters": cs.voters, "learners": cs.learners }),
            ),
            Err(e) => error_response(&e, true),
        }
    }

    fn transfer(&self, body: &[u8]) -> Response {
        let id = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_u64))
            .filter(|&i| i != 0);
        let Some(id) = id else {
            return Response::error(400, "the body must be JSON: {\"id\":2}", None);
        };
        match self.db.transfer_leadership(id) {
            Ok(()) => Response::json(200, &json!({ "leader": id })),
            Err(e) => error_response(&e, false),
        }
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b%2F").unwrap(), b"a b/");
        assert_eq!(percent_decode("plain").unwrap(), b"plain");
        assert!(percent_decode("bad%2").is_none());
        assert!(percent_decode("bad%zz").is_none());
    }

    fn answer(e: &Error, write: bool) -> (u16, Value) {
        let r = error_response(e, write);
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    fn fatal() -> Fatal {
        Fatal {
            kind: keel_engine::FatalKind::Panic,
            thread: "keel-raft-1".into(),
            detail: "boom".into(),
        }
    }

    // Regression: a stopped node's refusal was answered 504 "unknown", though
    // `Stopped` means the request was never proposed.
    #[test]
    fn a_stopped_node_answers_503_not_applied() {
        for reason in [
            keel_engine::StopReason::Closed,
            keel_engine::StopReason::Fatal(fatal()),
        ] {
            let (code, v) = answer(&Error::Stopped(reason.clone()), true);
            assert_eq!(code, 503, "{reason}: {v}");
            assert_eq!(v["applied"], false, "{v}");
            let (code, v) = answer(&Error::Stopped(reason), false);
            assert_eq!(code, 503, "{v}");
            assert!(v.get("applied").is_none(), "{v}");
        }
    }

    #[test]
    fn the_fatal_cause_is_part_of_the_answer() {
        let (code, v) = answer(
            &Error::Stopped(keel_engine::StopReason::Fatal(fatal())),
            true,
        );
        assert_eq!(code, 503);
        assert_eq!(v["fatal"]["kind"], "panic", "{v}");
        assert_eq!(v["fatal"]["thread"], "keel-raft-1", "{v}");
        assert_eq!(v["fatal"]["detail"], "boom", "{v}");
        // Proposed before the stop: outcome unknown, and why.
        let stopped = keel_engine::UnknownOutcome::Stopped(keel_engine::StopReason::Fatal(fatal()));
        let (code, v) = answer(&Error::Indeterminate(stopped), true);
        assert_eq!(code, 504, "{v}");
        assert_eq!(v["applied"], "unknown", "{v}");
        assert_eq!(v["fatal"]["kind"], "panic", "{v}");
        let (code, v) = answer(&Error::Stopped(keel_engine::StopReason::Closed), true);
        assert_eq!(code, 503);
        assert!(v.get("fatal").is_none(), "{v}");
    }

    #[test]
    fn reads_query_parameters() {
        assert_eq!(
            query_param("consistency=serializable", "consistency"),
            Some("serializable")
        );
        assert_eq!(query_param("a=1&consistency=x", "consistency"), Some("x"));
        assert_eq!(query_param("a=1", "consistency"), None);
    }
}
