//! The API over an in-memory store: sessions, RBAC, errors, realization
//! failures rolling back, async tasks, events, and the HTTP framing.

use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xapi_wire::{MethodCall, Response, Value};
use xnet_api::http::{read_request, route, HttpError, Request};
use xnet_api::{Api, Origin, Realizer, Role, Users};
use xnet_model::{ApiError, Db};
use xnet_store::{Options, Store};

/// A realizer whose answer the test sets.
struct Switch(AtomicBool);
impl Realizer for Switch {
    fn realize(&self, host: &str, _generation: u64) -> Result<(), ApiError> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ApiError::new(
                "PIF_CONFIGURATION_ERROR",
                &[host, "switched off"],
            ))
        }
    }
}

fn setup() -> (Arc<Api>, Arc<Switch>) {
    let store = Arc::new(Store::in_memory(Options {
        volatile_tables: xnet_api::volatile_tables(),
        ..Options::default()
    }));
    let setup = xnet_model::install::Setup {
        hostname: "t".into(),
        backend: "openvswitch".into(),
        nics: (0..3)
            .map(|n| xnet_model::host::Nic {
                device: format!("eth{n}"),
                mac: format!("52:54:00:00:10:0{n}"),
                position: n,
                carrier: true,
                speed_mbps: 0,
                duplex_full: false,
                driver: String::new(),
            })
            .collect(),
        management: Default::default(),
    };
    store
        .write(|t| {
            let mut t = xnet_api::tables::TxnTables(t);
            xnet_model::install::install(&mut Db::new(&mut t), &setup)
        })
        .unwrap();
    let mut users = Users::default();
    users.set("admin", "pw", Role::PoolAdmin).unwrap();
    users.set("ro", "pw", Role::ReadOnly).unwrap();
    let sw = Arc::new(Switch(AtomicBool::new(true)));
    (Api::new(store, users, sw.clone()), sw)
}

fn call(api: &Arc<Api>, method: &str, params: Vec<Value>) -> Response {
    api.handle(
        MethodCall {
            method: method.into(),
            params,
        },
        Origin::Network,
    )
}
fn ok(r: Response) -> Value {
    match r {
        Response::Success(v) => v,
        Response::Failure(e) => panic!("failed: {e:?}"),
    }
}
fn failure(r: Response) -> Vec<String> {
    match r {
        Response::Failure(e) => e,
        Response::Success(v) => panic!("succeeded: {v:?}"),
    }
}
fn s(x: &str) -> Value {
    Value::String(x.into())
}
fn login(api: &Arc<Api>, user: &str) -> Value {
    ok(call(
        api,
        "session.login_with_password",
        vec![s(user), s("pw")],
    ))
}

#[test]
fn sessions_and_rbac() {
    let (api, _) = setup();
    assert_eq!(
        failure(call(
            &api,
            "session.login_with_password",
            vec![s("admin"), s("no")]
        ))[0],
        "SESSION_AUTHENTICATION_FAILED"
    );
    assert_eq!(
        failure(call(&api, "PIF.get_all", vec![s("OpaqueRef:bogus")])),
        vec!["SESSION_INVALID", "OpaqueRef:bogus"]
    );
    assert_eq!(
        failure(call(&api, "PIF.get_all", vec![]))[0],
        "SESSION_INVALID"
    );
    let ro = login(&api, "ro");
    assert_eq!(
        ok(call(&api, "PIF.get_all", vec![ro.clone()]))
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let args = Value::Struct(
        [
            ("name_label".to_string(), s("x")),
            (
                "other_config".to_string(),
                Value::Struct(Default::default()),
            ),
        ]
        .into_iter()
        .collect(),
    );
    assert_eq!(
        failure(call(&api, "network.create", vec![ro.clone(), args.clone()]))[0],
        "RBAC_PERMISSION_DENIED"
    );
    let admin = login(&api, "admin");
    ok(call(&api, "network.create", vec![admin.clone(), args]));
    ok(call(&api, "session.logout", vec![admin.clone()]));
    assert_eq!(
        failure(call(&api, "PIF.get_all", vec![admin]))[0],
        "SESSION_INVALID"
    );
    // root on the unix socket is the local superuser whatever the password.
    let local = api.handle(
        MethodCall {
            method: "session.login_with_password".into(),
            params: vec![s("root"), s("")],
        },
        Origin::Unix,
    );
    assert!(matches!(local, Response::Success(_)));
    assert_eq!(
        failure(call(
            &api,
            "session.login_with_password",
            vec![s("root"), s("")]
        ))[0],
        "SESSION_AUTHENTICATION_FAILED"
    );
}

#[test]
fn failed_realization_rolls_back() {
    let (api, sw) = setup();
    let sess = login(&api, "admin");
    let pifs = ok(call(&api, "PIF.get_all_records", vec![sess.clone()]));
    let eth1 = pifs
        .as_struct()
        .unwrap()
        .iter()
        .find(|(_, r)| r.as_struct().unwrap()["device"] == s("eth1"))
        .map(|(k, _)| k.clone())
        .unwrap();
    sw.0.store(false, Ordering::SeqCst);
    let e = failure(call(&api, "PIF.plug", vec![sess.clone(), s(&eth1)]));
    assert_eq!(e[0], "PIF_CONFIGURATION_ERROR");
    assert_eq!(
        ok(call(
            &api,
            "PIF.get_currently_attached",
            vec![sess.clone(), s(&eth1)]
        )),
        Value::Bool(false)
    );
    sw.0.store(true, Ordering::SeqCst);
    ok(call(&api, "PIF.plug", vec![sess.clone(), s(&eth1)]));
    assert_eq!(
        ok(call(
            &api,
            "PIF.get_currently_attached",
            vec![sess, s(&eth1)]
        )),
        Value::Bool(true)
    );
}

#[test]
fn async_tasks_and_events() {
    let (api, _) = setup();
    let sess = login(&api, "admin");
    let from = ok(call(
        &api,
        "event.from",
        vec![
            sess.clone(),
            Value::Array(vec![s("network")]),
            s(""),
            Value::Float(0.0),
        ],
    ));
    let token = from.as_struct().unwrap()["token"].clone();
    let args = Value::Struct(
        [
            ("name_label".to_string(), s("async")),
            (
                "other_config".to_string(),
                Value::Struct(Default::default()),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let task = ok(call(&api, "Async.network.create", vec![sess.clone(), args]));
    let mut status = String::new();
    for _ in 0..200 {
        status = ok(call(
            &api,
            "task.get_status",
            vec![sess.clone(), task.clone()],
        ))
        .as_str()
        .unwrap()
        .to_string();
        if status != "pending" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(status, "success");
    let result = ok(call(
        &api,
        "task.get_result",
        vec![sess.clone(), task.clone()],
    ));
    assert!(result.as_str().unwrap().starts_with("<value>OpaqueRef:"));
    let evs = ok(call(
        &api,
        "event.from",
        vec![
            sess.clone(),
            Value::Array(vec![s("network")]),
            token,
            Value::Float(1.0),
        ],
    ));
    let evs = evs.as_struct().unwrap()["events"]
        .as_array()
        .unwrap()
        .to_vec();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].as_struct().unwrap()["operation"], s("add"));
    assert_eq!(
        failure(call(&api, "Async.session.logout", vec![sess.clone()]))[0],
        "MESSAGE_METHOD_UNKNOWN"
    );
    assert_eq!(
        failure(call(&api, "Async.PIF.get_all", vec![sess]))[0],
        "MESSAGE_METHOD_UNKNOWN"
    );
}

fn req(raw: &[u8]) -> Result<Request, HttpError> {
    read_request(&mut BufReader::new(raw))
}

#[test]
fn http_framing_and_routes() {
    let r = req(b"POST /RPC2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    assert_eq!(
        (r.path.as_str(), r.body.as_slice(), r.keep_alive),
        ("/RPC2", &b"abc"[..], true)
    );
    assert_eq!(
        req(b"POST / HTTP/1.1\r\n\r\n").err(),
        Some(HttpError::LengthRequired)
    );
    assert_eq!(
        req(b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").err(),
        Some(HttpError::TooLarge)
    );
    assert_eq!(
        req(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").err(),
        Some(HttpError::Bad("truncated body"))
    );
    assert!(req(b"").is_err());
    let (api, _) = setup();
    let bad = Request {
        method: "POST".into(),
        path: "/".into(),
        body: b"<junk".to_vec(),
        keep_alive: false,
    };
    let (_, _, body) = route(&api, &bad, Origin::Network);
    assert!(body.contains("<fault>"));
    let bad = Request {
        method: "POST".into(),
        path: "/jsonrpc".into(),
        body: b"{".to_vec(),
        keep_alive: false,
    };
    assert!(route(&api, &bad, Origin::Network).2.contains("-32700"));
    let nf = Request {
        method: "GET".into(),
        path: "/nope".into(),
        body: vec![],
        keep_alive: false,
    };
    assert!(route(&api, &nf, Origin::Network).0.starts_with("404"));
}

#[test]
fn bulk_reads_encode_as_the_value_would() {
    let (api, _) = setup();
    let sess = login(&api, "admin");
    // Awkward strings: escapes in both formats.
    let net = ok(call(
        &api,
        "network.create",
        vec![
            sess.clone(),
            Value::Struct(
                [
                    ("name_label".to_string(), s("a<&>\"\\\n\u{1}é")),
                    (
                        "other_config".to_string(),
                        Value::Struct(Default::default()),
                    ),
                ]
                .into_iter()
                .collect(),
            ),
        ],
    ));
    assert!(net.as_str().is_some());
    // Enough records for the encoding to be split across threads.
    for i in 0..1100 {
        let args = Value::Struct(
            [
                ("name_label".to_string(), s(&format!("n{i}"))),
                (
                    "other_config".to_string(),
                    Value::Struct(Default::default()),
                ),
            ]
            .into_iter()
            .collect(),
        );
        ok(call(&api, "network.create", vec![sess.clone(), args]));
    }
    for (method, params) in [
        ("PIF.get_all_records", vec![sess.clone()]),
        ("network.get_all_records", vec![sess.clone()]),
        ("host.get_all_records", vec![sess.clone()]),
        (
            "PIF.get_all_records_where",
            vec![sess.clone(), s("field \"device\" = \"eth1\"")],
        ),
        (
            "network.get_all_records_where",
            vec![sess.clone(), s("field \"name_label\" = \"nothing\"")],
        ),
    ] {
        let c = MethodCall {
            method: method.into(),
            params: params.clone(),
        };
        let slow = api.handle(c.clone(), Origin::Network);
        let fast = api
            .handle_bulk(&c, xapi_wire::stream::Format::Xml)
            .unwrap()
            .unwrap();
        assert_eq!(
            xapi_wire::xmlrpc::encode_success_raw(&fast),
            xapi_wire::xmlrpc::encode_response(&slow),
            "{method} XML"
        );
        let fast = api
            .handle_bulk(&c, xapi_wire::stream::Format::Json)
            .unwrap()
            .unwrap();
        for v in [
            xapi_wire::jsonrpc::Version::V1,
            xapi_wire::jsonrpc::Version::V2,
        ] {
            let id = serde_json::json!(7);
            assert_eq!(
                xapi_wire::jsonrpc::encode_success_raw(v, &id, &fast),
                xapi_wire::jsonrpc::encode_response(v, &id, &slow),
                "{method} JSON"
            );
        }
    }
    // Bad sessions get SESSION_INVALID; malformed calls fall back to the
    // normal path and its errors.
    let bad = MethodCall {
        method: "PIF.get_all_records".into(),
        params: vec![s("OpaqueRef:nope")],
    };
    let e = api
        .handle_bulk(&bad, xapi_wire::stream::Format::Xml)
        .unwrap()
        .unwrap_err();
    assert_eq!(e.to_description()[0], "SESSION_INVALID");
    let extra = MethodCall {
        method: "PIF.get_all_records".into(),
        params: vec![sess.clone(), s("x")],
    };
    assert!(api
        .handle_bulk(&extra, xapi_wire::stream::Format::Xml)
        .is_none());
    let bad_expr = MethodCall {
        method: "PIF.get_all_records_where".into(),
        params: vec![sess, s("field ( = ")],
    };
    assert!(api
        .handle_bulk(&bad_expr, xapi_wire::stream::Format::Xml)
        .is_none());
}
