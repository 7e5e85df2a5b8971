//! The fixture the model's integration tests share: an installed six-NIC
//! host, and calls made the way the API makes them.
#![allow(dead_code)]

use xapi_wire::Value;
use xnet_model::calls::{decode_args, registry, Handler};
use xnet_model::db::{self, b, i, s};
use xnet_model::host::Nic;
use xnet_model::install::{install, Management, Setup};
use xnet_model::{ApiError, Db, MemTables, Read, Reader};

pub struct Fx {
    pub t: MemTables,
    pub host: String,
}

pub fn nic(n: u32) -> Nic {
    Nic {
        device: format!("eth{n}"),
        mac: format!("52:54:00:00:00:0{n}"),
        position: n,
        carrier: true,
        speed_mbps: 1000,
        duplex_full: true,
        driver: "veth".into(),
    }
}

pub fn fx() -> Fx {
    let mut t = MemTables::default();
    let setup = Setup {
        hostname: "h0".into(),
        backend: "openvswitch".into(),
        nics: (0..6).map(nic).collect(),
        management: Management {
            device: Some("eth0".into()),
            mode: "static".into(),
            ip: "10.10.0.2".into(),
            netmask: "255.255.255.0".into(),
            gateway: "10.10.0.1".into(),
            dns: "10.10.0.53".into(),
            domain: "lab.example".into(),
        },
    };
    let host = {
        let mut d = Db::new(&mut t);
        install(&mut d, &setup).unwrap()
    };
    Fx { t, host }
}

impl Fx {
    /// Calls a registered message the way the API does: decode, then run;
    /// on error the tables are left as they were (the store's transaction).
    pub fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, ApiError> {
        let call = registry().lookup(method).expect("registered");
        let args = decode_args(&self.t, call, &args)?;
        match &call.handler {
            Handler::Read(f) => f(&Reader { t: &self.t }, &args),
            Handler::Write(f) => {
                let mut copy = self.t.clone();
                let r = {
                    let mut d = Db::new(&mut copy);
                    f(&mut d, &args)
                };
                if r.is_ok() {
                    self.t = copy;
                }
                r
            }
        }
    }
    pub fn r(&self) -> Reader<'_> {
        Reader { t: &self.t }
    }
    pub fn pif(&self, dev: &str) -> String {
        self.r().find("PIF", &|r| {
            s(r, "device") == dev && i(r, "VLAN") < 0 && b(r, "physical")
        })[0]
            .clone()
    }
    pub fn net_of(&self, pif: &str) -> String {
        s(self.t.tables["PIF"].get(pif).unwrap(), "network").to_string()
    }
    pub fn rec(&self, class: &str, r: &str) -> db::Record {
        self.t.tables[class][r].clone()
    }
    pub fn new_net(&mut self, label: &str) -> String {
        let args = Value::Struct(
            [
                ("name_label".to_string(), db::vs(label)),
                (
                    "other_config".to_string(),
                    Value::Struct(Default::default()),
                ),
            ]
            .into_iter()
            .collect(),
        );
        self.call("network.create", vec![args])
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }
}

pub fn vs(x: &str) -> Value {
    db::vs(x)
}
pub fn code(r: Result<Value, ApiError>) -> (String, Vec<String>) {
    let e = r.expect_err("expected an error");
    (e.code, e.params)
}

pub fn new_vm(f: &mut Fx, name: &str) -> String {
    let args = Value::Struct([("name_label".to_string(), vs(name))].into_iter().collect());
    f.call("VM.create", vec![args])
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}
