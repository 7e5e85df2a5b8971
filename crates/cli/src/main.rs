//! `xe`: the XenAPI CLI. A plain XenAPI client (JSON-RPC) that prints exactly
//! as XAPI's xe does.

mod errors;
mod printer;
mod records;

mod xl_import;

use records::{Cls, Fld, Set, Src};
use std::collections::{BTreeMap, HashMap};
use xapi_client::{CallError, Client, Target};
use xapi_wire::Value;

/// Anything the CLI calls; the real client, or a fake in tests.
pub trait Api {
    fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, CallError>;
}

struct Session {
    client: Client,
    session: Value,
}
impl Api for Session {
    fn call(&mut self, method: &str, mut params: Vec<Value>) -> Result<Value, CallError> {
        params.insert(0, self.session.clone());
        self.client.call(method, params)
    }
}

/// A failed command: the text for stderr.
struct Fail(String);
type R<T> = Result<T, Fail>;

fn api_fail(e: CallError, cache: &mut Cache, api: &mut dyn Api) -> Fail {
    match e {
        CallError::Api(desc) => {
            let uuids: HashMap<String, String> = desc
                .iter()
                .filter(|p| p.starts_with("OpaqueRef:"))
                .map(|p| (p.clone(), cache.uuid_any(api, p)))
                .collect();
            Fail(errors::describe(&desc, &|r| {
                uuids.get(r).cloned().unwrap_or_else(|| r.to_string())
            }))
        }
        CallError::Transport(t) => Fail(format!("{t}\n")),
    }
}

/// Records fetched once per command, per class.
#[derive(Default)]
struct Cache {
    classes: HashMap<&'static str, BTreeMap<String, Value>>,
}
impl Cache {
    fn all(&mut self, api: &mut dyn Api, class: &'static str) -> &BTreeMap<String, Value> {
        if !self.classes.contains_key(class) {
            let v = api.call(&format!("{class}.get_all_records"), vec![]).ok();
            let m = v.and_then(|v| v.as_struct().cloned()).unwrap_or_default();
            self.classes.insert(class, m);
        }
        &self.classes[class]
    }
    fn uuid(&mut self, api: &mut dyn Api, class: &'static str, r: &str) -> String {
        self.all(api, class)
            .get(r)
            .and_then(|rec| rec.as_struct()?.get("uuid")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "<not in database>".into())
    }
    /// A ref of unknown class as a uuid (for error messages).
    fn uuid_any(&mut self, api: &mut dyn Api, r: &str) -> String {
        for c in API_CLASSES {
            let u = self.uuid(api, c, r);
            if u != "<not in database>" {
                return u;
            }
        }
        r.to_string()
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Nil => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::String(s) | Value::DateTime(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join("; "),
        Value::Struct(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", text(v)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn field_value(
    api: &mut dyn Api,
    cache: &mut Cache,
    f: &Fld,
    rec: &BTreeMap<String, Value>,
) -> String {
    let get = |k: &str| rec.get(k).cloned().unwrap_or(Value::Nil);
    let cls = |c: &str| -> &'static str { records_class(c) };
    match f.src {
        Src::F(k) => {
            let v = get(k);
            // xe joins a few sets with ", "
            if matches!(f.name, "tags" | "purpose") {
                if let Value::Array(a) = &v {
                    return a.iter().map(text).collect::<Vec<_>>().join(", ");
                }
            }
            text(&v)
        }
        Src::Uuid(k, c) => cache.uuid(api, cls(c), get(k).as_str().unwrap_or("")),
        Src::Uuids(k, c) => match get(k) {
            Value::Array(a) => a
                .iter()
                .map(|r| cache.uuid(api, cls(c), r.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        },
        Src::Via(k, c, field) => {
            let r = get(k).as_str().unwrap_or("").to_string();
            cache
                .all(api, cls(c))
                .get(&r)
                .and_then(|x| x.as_struct()?.get(field).map(text))
                .unwrap_or_else(|| "<not in database>".into())
        }
        Src::Metric(m) => metric(api, cache, rec, m)
            .map(|v| text(&v))
            .unwrap_or_default(),
        Src::Speed => match metric(api, cache, rec, "speed") {
            Some(v) => format!("{} Mbit/s", text(&v)),
            None => String::new(),
        },
        Src::Duplex => match metric(api, cache, rec, "duplex") {
            Some(Value::Bool(true)) => "full".into(),
            Some(Value::Bool(false))
                if metric(api, cache, rec, "carrier") == Some(Value::Bool(true)) =>
            {
                "half".into()
            }
            _ => "unknown".into(),
        },
        Src::Expensive => "<expensive field>".into(),
        Src::Kbs(class, f) => {
            let m = rec.get("metrics").and_then(Value::as_str).unwrap_or("");
            let mr = cache.all(api, cls(class)).get(m).and_then(Value::as_struct);
            // XAPI's xe says <unknown> when there is no measurement.
            match mr {
                Some(mr) if measured(mr) => match mr.get(f) {
                    Some(Value::Float(x)) => ocaml_float(*x),
                    _ => "<unknown>".into(),
                },
                _ => "<unknown>".into(),
            }
        }
    }
}

/// A metrics record the agent has written (last_updated past the epoch).
fn measured(mr: &BTreeMap<String, Value>) -> bool {
    let ts = mr.get("last_updated").map(text).unwrap_or_default();
    !ts.is_empty() && !ts.starts_with("19700101")
}

/// OCaml's `string_of_float` (xe prints rates with it): `%.12g`, with a
/// trailing `.` when that looks like an integer.
fn ocaml_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let exp = if x == 0.0 {
        0
    } else {
        x.abs().log10().floor() as i32
    };
    let s = if (-5..12).contains(&exp) {
        let dec = (11 - exp).max(0) as usize;
        let s = format!("{x:.dec$}");
        if s.contains('.') {
            s.trim_end_matches('0').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{x:.11e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = m.trim_end_matches('0').trim_end_matches('.');
        let e: i32 = e.parse().unwrap_or(0);
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    };
    if s.contains(['.', 'e']) {
        s
    } else {
        format!("{s}.")
    }
}

fn metric(
    api: &mut dyn Api,
    cache: &mut Cache,
    rec: &BTreeMap<String, Value>,
    f: &str,
) -> Option<Value> {
    let r = rec.get("metrics")?.as_str()?.to_string();
    cache
        .all(api, "PIF_metrics")
        .get(&r)?
        .as_struct()?
        .get(f)
        .cloned()
}

/// Classes whose records the CLI reads, by wire name.
const API_CLASSES: [&str; 12] = [
    "PIF",
    "network",
    "VIF",
    "VM",
    "host",
    "Bond",
    "VLAN",
    "tunnel",
    "network_sriov",
    "pool",
    "PIF_metrics",
    "VIF_metrics",
];

fn records_class(c: &str) -> &'static str {
    API_CLASSES.into_iter().find(|x| *x == c).unwrap_or("PIF")
}

struct Args {
    cmd: String,
    kv: Vec<(String, String)>,
    minimal: bool,
    force: bool,
    all: bool,
}
impl Args {
    fn get(&self, k: &str) -> Option<&str> {
        self.kv
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    fn need(&self, k: &str) -> R<&str> {
        self.get(k).ok_or_else(|| {
            Fail(format!(
                "This operation requires the following parameter: {k}\n"
            ))
        })
    }
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

struct Ctx<'a> {
    api: &'a mut dyn Api,
    cache: Cache,
    out: String,
}
impl Ctx<'_> {
    fn call(&mut self, m: &str, p: Vec<Value>) -> R<Value> {
        match self.api.call(m, p) {
            Ok(v) => Ok(v),
            Err(e) => Err(api_fail(e, &mut self.cache, self.api)),
        }
    }
    fn by_uuid(&mut self, class: &str, uuid: &str) -> R<String> {
        Ok(self
            .call(&format!("{class}.get_by_uuid"), vec![s(uuid)])?
            .as_str()
            .unwrap_or("")
            .to_string())
    }
    fn uuid_of(&mut self, class: &str, r: &Value) -> R<String> {
        Ok(text(
            &self.call(&format!("{class}.get_uuid"), vec![r.clone()])?,
        ))
    }
    fn println(&mut self, line: &str) {
        self.out.push_str(line);
        self.out.push('\n');
    }
}

/// Renders the selected fields of one record.
fn render(
    ctx: &mut Ctx,
    c: &Cls,
    rec: &BTreeMap<String, Value>,
    names: Option<&[String]>,
    listing: bool,
) -> Vec<(String, String)> {
    let mut out = vec![];
    for f in c.fields {
        if let Some(n) = names {
            if !n.iter().any(|x| x == f.name) {
                continue;
            }
        }
        let v = match f.src {
            Src::Kbs(..) if listing => "<expensive field>".into(),
            _ => field_value(ctx.api, &mut ctx.cache, f, rec),
        };
        out.push((printer::key(f.name, f.tag), v));
    }
    out
}

fn matches_filters(
    ctx: &mut Ctx,
    c: &Cls,
    rec: &BTreeMap<String, Value>,
    filters: &[(String, String)],
) -> bool {
    for (k, want) in filters {
        let (name, mkey) = match k.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (k.as_str(), None),
        };
        let Some(f) = c.fields.iter().find(|f| f.name == name) else {
            return false;
        };
        let ok = match mkey {
            Some("contains") => field_value(ctx.api, &mut ctx.cache, f, rec)
                .split("; ")
                .any(|x| x == want),
            Some(mk) => match f.src {
                Src::F(api) => {
                    rec.get(api)
                        .and_then(|m| m.as_struct()?.get(mk).map(text))
                        .as_deref()
                        == Some(want.as_str())
                }
                _ => false,
            },
            None => {
                let v = field_value(ctx.api, &mut ctx.cache, f, rec);
                if name == "MAC" {
                    v.eq_ignore_ascii_case(want)
                } else {
                    v == *want
                }
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

fn list(ctx: &mut Ctx, c: &'static Cls, a: &Args, extra: &[(String, String)]) -> R<()> {
    let params: Option<Vec<String>> = match a.get("params") {
        Some("all") => None,
        Some(p) => Some(p.split(',').map(str::to_string).collect()),
        None => Some(c.list.iter().map(|s| s.to_string()).collect()),
    };
    let filters: Vec<(String, String)> = if a.all {
        vec![]
    } else {
        a.kv.iter()
            .filter(|(k, _)| k != "params")
            .cloned()
            .chain(extra.iter().cloned())
            .collect()
    };
    let recs = ctx.cache.all(ctx.api, records_class(c.api)).clone();
    let mut first = vec![];
    for rec in recs.values() {
        let Some(rec) = rec.as_struct() else { continue };
        if !matches_filters(ctx, c, rec, &filters) {
            continue;
        }
        let fields = render(ctx, c, rec, params.as_deref(), true);
        if a.minimal {
            if let Some((_, v)) = fields.first() {
                first.push(v.clone());
            }
        } else if !fields.is_empty() {
            ctx.out.push_str(&printer::record(&fields));
        }
    }
    if a.minimal {
        let line = printer::minimal(&first);
        ctx.println(&line);
    }
    Ok(())
}

fn record_of(ctx: &mut Ctx, c: &'static Cls, uuid: &str) -> R<(String, BTreeMap<String, Value>)> {
    let r = ctx.by_uuid(c.api, uuid)?;
    let rec = ctx.call(&format!("{}.get_record", c.api), vec![s(&r)])?;
    Ok((r, rec.as_struct().cloned().unwrap_or_default()))
}

fn field<'a>(c: &'a Cls, name: &str) -> R<&'a Fld> {
    c.fields
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| Fail(format!("Unknown field '{name}'\n")))
}

fn param_cmd(ctx: &mut Ctx, c: &'static Cls, op: &str, a: &Args) -> R<()> {
    let uuid = a.need("uuid")?.to_string();
    match op {
        "param-list" => {
            let (_, rec) = record_of(ctx, c, &uuid)?;
            let fields = render(ctx, c, &rec, None, false);
            ctx.out.push_str(&printer::record(&fields));
        }
        "param-get" => {
            let (_, rec) = record_of(ctx, c, &uuid)?;
            let f = field(c, a.need("param-name")?)?;
            match a.get("param-key") {
                Some(k) => {
                    let Src::F(api) = f.src else {
                        return Err(Fail("Key not found\n".into()));
                    };
                    let v = rec.get(api).and_then(|m| m.as_struct()?.get(k).map(text));
                    match v {
                        Some(v) => ctx.println(&v),
                        None => return Err(Fail(format!("Key {k} is not in map\n"))),
                    }
                }
                None => {
                    let v = field_value(ctx.api, &mut ctx.cache, f, &rec);
                    ctx.println(&v);
                }
            }
        }
        "param-set" => {
            let (r, _) = record_of(ctx, c, &uuid)?;
            for (k, v) in a.kv.iter().filter(|(k, _)| k != "uuid") {
                let (name, mkey) = match k.split_once(':') {
                    Some((n, mk)) => (n, Some(mk)),
                    None => (k.as_str(), None),
                };
                let f = field(c, name)?;
                match (f.set, mkey) {
                    (Set::Call(m), None) => {
                        ctx.call(m, vec![s(&r), s(v)])?;
                    }
                    (Set::Items(_, _, Some(setter)), None) => {
                        let items = v.split(',').filter(|x| !x.is_empty()).map(s).collect();
                        ctx.call(setter, vec![s(&r), Value::Array(items)])?;
                    }
                    (Set::Map(api), Some(mk)) => {
                        let _ = ctx
                            .api
                            .call(&format!("{}.remove_from_{api}", c.api), vec![s(&r), s(mk)]);
                        ctx.call(&format!("{}.add_to_{api}", c.api), vec![s(&r), s(mk), s(v)])?;
                    }
                    (Set::Prop(m), Some(mk)) => {
                        ctx.call(m, vec![s(&r), s(mk), s(v)])?;
                    }
                    (Set::Items(..), Some(_)) => {
                        return Err(Fail("Cannot param-set on set fields\n".into()))
                    }
                    _ => return Err(Fail(format!("Field '{name}' is read-only.\n"))),
                }
            }
        }
        "param-add" => {
            let (r, _) = record_of(ctx, c, &uuid)?;
            let f = field(c, a.need("param-name")?)?;
            match f.set {
                Set::Items(add, _, _) => {
                    let v = a.need("param-key")?.to_string();
                    ctx.call(add, vec![s(&r), s(&v)])?;
                }
                Set::Map(api) => {
                    for (k, v) in
                        a.kv.iter()
                            .filter(|(k, _)| k != "uuid" && k != "param-name")
                    {
                        ctx.call(&format!("{}.add_to_{api}", c.api), vec![s(&r), s(k), s(v)])?;
                    }
                }
                _ => return Err(Fail(format!("Field '{}' is read-only.\n", f.name))),
            }
        }
        "param-remove" => {
            let (r, rec) = record_of(ctx, c, &uuid)?;
            let f = field(c, a.need("param-name")?)?;
            let key = a.need("param-key")?.to_string();
            match (f.set, f.src) {
                (Set::Items(_, rm, _), _) => {
                    ctx.call(rm, vec![s(&r), s(&key)])?;
                }
                (Set::Map(api), Src::F(field)) => {
                    if rec
                        .get(field)
                        .and_then(|m| m.as_struct())
                        .map(|m| m.contains_key(&key))
                        != Some(true)
                    {
                        return Err(Fail(format!("Key {key} is not in map\n")));
                    }
                    ctx.call(
                        &format!("{}.remove_from_{api}", c.api),
                        vec![s(&r), s(&key)],
                    )?;
                }
                _ => return Err(Fail(format!("Field '{}' is read-only.\n", f.name))),
            }
        }
        "param-clear" => {
            let (r, rec) = record_of(ctx, c, &uuid)?;
            let f = field(c, a.need("param-name")?)?;
            match (f.set, f.src) {
                (Set::Map(api), Src::F(field)) => {
                    let keys: Vec<String> = rec
                        .get(field)
                        .and_then(|m| m.as_struct())
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    for k in keys {
                        ctx.call(&format!("{}.remove_from_{api}", c.api), vec![s(&r), s(&k)])?;
                    }
                }
                (Set::Items(_, rm, _), Src::F(field)) => {
                    let items: Vec<Value> = rec
                        .get(field)
                        .and_then(|v| v.as_array())
                        .map(|a| a.to_vec())
                        .unwrap_or_default();
                    for i in items {
                        ctx.call(rm, vec![s(&r), i])?;
                    }
                }
                (Set::Call(m), _) => {
                    ctx.call(m, vec![s(&r), s("")])?;
                }
                _ => return Err(Fail(format!("Field '{}' is read-only.\n", f.name))),
            }
        }
        _ => return Err(Fail(format!("Unknown command: {}-{op}\n", c.cli))),
    }
    Ok(())
}

fn print_uuid(ctx: &mut Ctx, class: &str, r: &Value) -> R<()> {
    let u = ctx.uuid_of(class, r)?;
    ctx.println(&u);
    Ok(())
}

fn random_mac() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[0] = (b[0] | 0x02) & !0x01;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The pool's `other_config:xnet-mac-prefix` (an OUI such as Xen's
/// `00:16:3e`), which the server also applies to seed-derived MACs.
fn pool_mac_prefix(ctx: &mut Ctx) -> R<Option<[u8; 3]>> {
    const KEY: &str = "xnet-mac-prefix";
    let pools = ctx.call("pool.get_all", vec![])?;
    let Some(pool) = pools.as_array().and_then(|a| a.first()).cloned() else {
        return Ok(None);
    };
    let oc = ctx.call("pool.get_other_config", vec![pool])?;
    let Some(v) = oc.as_struct().and_then(|m| m.get(KEY)).map(text) else {
        return Ok(None);
    };
    let bytes: Vec<Option<u8>> = v
        .split(':')
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect();
    match bytes[..] {
        [Some(a), Some(b), Some(c)] if a & 1 == 0 => Ok(Some([a, b, c])),
        _ => Err(Fail(format!(
            "The pool's other-config:{KEY} must be three hex octets with a unicast first octet, e.g. 00:16:3e; it is '{v}'.\n"
        ))),
    }
}

/// A random MAC with its first three bytes replaced by the prefix.
fn with_prefix(mac: String, prefix: Option<[u8; 3]>) -> String {
    match prefix {
        Some(p) => format!("{:02x}:{:02x}:{:02x}{}", p[0], p[1], p[2], &mac[8..]),
        None => mac,
    }
}

fn net_create_args(a: &Args) -> R<Value> {
    let mut m = BTreeMap::new();
    m.insert("name_label".to_string(), s(a.need("name-label")?));
    m.insert(
        "name_description".to_string(),
        s(a.get("name-description").unwrap_or("")),
    );
    let mtu: i64 = a
        .get("MTU")
        .unwrap_or("1500")
        .parse()
        .map_err(|_| Fail("MTU must be an integer\n".into()))?;
    m.insert("MTU".to_string(), Value::Int(mtu));
    m.insert("other_config".to_string(), Value::Struct(BTreeMap::new()));
    m.insert("bridge".to_string(), s(a.get("bridge").unwrap_or("")));
    let managed = a
        .get("managed")
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(true);
    m.insert("managed".to_string(), Value::Bool(managed));
    m.insert("tags".to_string(), Value::Array(vec![]));
    Ok(Value::Struct(m))
}

fn command(ctx: &mut Ctx, a: &Args) -> R<()> {
    let cmd = a.cmd.as_str();
    // Generated commands: <class>-list, <class>-param-*.
    for c in records::CLASSES {
        if let Some(rest) = cmd.strip_prefix(c.cli).and_then(|r| r.strip_prefix('-')) {
            if rest == "list" {
                return list(ctx, c, a, &[]);
            }
            if rest.starts_with("param-") {
                return param_cmd(ctx, c, rest, a);
            }
        }
    }
    match cmd {
        "pif-scan" => {
            let h = ctx.by_uuid("host", a.need("host-uuid")?)?;
            ctx.call("PIF.scan", vec![s(&h)])?;
        }
        "pif-introduce" => {
            let h = ctx.by_uuid("host", a.need("host-uuid")?)?;
            let managed = a
                .get("managed")
                .map(|v| v.eq_ignore_ascii_case("true"))
                .unwrap_or(true);
            let r = ctx.call(
                "PIF.introduce",
                vec![
                    s(&h),
                    s(a.get("mac").unwrap_or("")),
                    s(a.need("device")?),
                    Value::Bool(managed),
                ],
            )?;
            print_uuid(ctx, "PIF", &r)?;
        }
        "pif-forget" | "pif-db-forget" | "pif-plug" | "pif-unplug" => {
            let p = ctx.by_uuid("PIF", a.need("uuid")?)?;
            let m = match cmd {
                "pif-forget" => "PIF.forget",
                "pif-db-forget" => "PIF.db_forget",
                "pif-plug" => "PIF.plug",
                _ => "PIF.unplug",
            };
            ctx.call(m, vec![s(&p)])?;
        }
        "pif-reconfigure-ip" => {
            let p = ctx.by_uuid("PIF", a.need("uuid")?)?;
            let get_ci = |k: &str| {
                a.kv.iter()
                    .find(|(x, _)| x.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            ctx.call(
                "PIF.reconfigure_ip",
                vec![
                    s(&p),
                    s(a.need("mode")?),
                    s(&get_ci("IP")),
                    s(a.get("netmask").unwrap_or("")),
                    s(a.get("gateway").unwrap_or("")),
                    s(&get_ci("DNS")),
                ],
            )?;
        }
        "pif-reconfigure-ipv6" => {
            let p = ctx.by_uuid("PIF", a.need("uuid")?)?;
            ctx.call(
                "PIF.reconfigure_ipv6",
                vec![
                    s(&p),
                    s(a.need("mode")?),
                    s(a.get("IPv6").unwrap_or("")),
                    s(a.get("gateway").unwrap_or("")),
                    s(a.get("DNS").unwrap_or("")),
                ],
            )?;
        }
        "pif-set-primary-address-type" => {
            let p = ctx.by_uuid("PIF", a.need("uuid")?)?;
            ctx.call(
                "PIF.set_primary_address_type",
                vec![s(&p), s(a.need("primary_address_type")?)],
            )?;
        }
        "network-create" => {
            let r = ctx.call("network.create", vec![net_create_args(a)?])?;
            print_uuid(ctx, "network", &r)?;
        }
        "network-destroy" => {
            let n = ctx.by_uuid("network", a.need("uuid")?)?;
            ctx.call("network.destroy", vec![s(&n)])?;
        }
        "vlan-create" | "pool-vlan-create" => {
            let p = ctx.by_uuid("PIF", a.need("pif-uuid")?)?;
            let n = ctx.by_uuid("network", a.need("network-uuid")?)?;
            let tag: i64 = a
                .need("vlan")?
                .parse()
                .map_err(|_| Fail("vlan must be an integer\n".into()))?;
            if cmd == "vlan-create" {
                let v = ctx.call("VLAN.create", vec![s(&p), Value::Int(tag), s(&n)])?;
                let up = ctx.call("VLAN.get_untagged_PIF", vec![v])?;
                print_uuid(ctx, "PIF", &up)?;
            } else {
                let pifs = ctx.call(
                    "pool.create_VLAN_from_PIF",
                    vec![s(&p), s(&n), Value::Int(tag)],
                )?;
                let mut uuids = vec![];
                for r in pifs.as_array().unwrap_or(&[]).to_vec() {
                    uuids.push(ctx.uuid_of("PIF", &r)?);
                }
                let line = if a.minimal {
                    printer::minimal(&uuids)
                } else {
                    uuids.join("\n")
                };
                ctx.println(&line);
            }
        }
        "vlan-destroy" => {
            let u = a.need("uuid")?.to_string();
            match ctx.api.call("VLAN.get_by_uuid", vec![s(&u)]) {
                Ok(v) => {
                    ctx.call("VLAN.destroy", vec![v])?;
                }
                // Rio compatibility: a VLAN PIF's uuid.
                Err(_) => {
                    let p = ctx.by_uuid("PIF", &u)?;
                    ctx.call("PIF.destroy", vec![s(&p)])?;
                }
            }
        }
        "bond-create" => {
            let n = ctx.by_uuid("network", a.need("network-uuid")?)?;
            let mut members = vec![];
            for u in a.need("pif-uuids")?.split(',').filter(|x| !x.is_empty()) {
                members.push(s(&ctx.by_uuid("PIF", u)?));
            }
            let props: BTreeMap<String, Value> = a
                .kv
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("properties:").map(|k| (k.to_string(), s(v))))
                .collect();
            let b = ctx.call(
                "Bond.create",
                vec![
                    s(&n),
                    Value::Array(members),
                    s(a.get("mac").unwrap_or("")),
                    s(a.get("mode").unwrap_or("balance-slb")),
                    Value::Struct(props),
                ],
            )?;
            print_uuid(ctx, "Bond", &b)?;
        }
        "bond-destroy" => {
            let b = ctx.by_uuid("Bond", a.need("uuid")?)?;
            ctx.call("Bond.destroy", vec![s(&b)])?;
        }
        "bond-set-mode" => {
            let b = ctx.by_uuid("Bond", a.need("uuid")?)?;
            ctx.call("Bond.set_mode", vec![s(&b), s(a.need("mode")?)])?;
        }
        "tunnel-create" => {
            let p = ctx.by_uuid("PIF", a.need("pif-uuid")?)?;
            let n = ctx.by_uuid("network", a.need("network-uuid")?)?;
            let t = ctx.call(
                "tunnel.create",
                vec![s(&p), s(&n), s(a.get("protocol").unwrap_or("gre"))],
            )?;
            let access = ctx.call("tunnel.get_access_PIF", vec![t])?;
            print_uuid(ctx, "PIF", &access)?;
        }
        "tunnel-destroy" => {
            let t = ctx.by_uuid("tunnel", a.need("uuid")?)?;
            ctx.call("tunnel.destroy", vec![s(&t)])?;
        }
        "network-sriov-create" => {
            let p = ctx.by_uuid("PIF", a.need("pif-uuid")?)?;
            let n = ctx.by_uuid("network", a.need("network-uuid")?)?;
            let r = ctx.call("network_sriov.create", vec![s(&p), s(&n)])?;
            print_uuid(ctx, "network_sriov", &r)?;
        }
        "network-sriov-destroy" => {
            let r = ctx.by_uuid("network_sriov", a.need("uuid")?)?;
            ctx.call("network_sriov.destroy", vec![s(&r)])?;
        }
        "vif-create" => {
            let n = ctx.by_uuid("network", a.need("network-uuid")?)?;
            let vm = ctx.by_uuid("VM", a.need("vm-uuid")?)?;
            let mtu = ctx.call("network.get_MTU", vec![s(&n)])?;
            let mac = match a.get("mac") {
                Some("random") => with_prefix(random_mac(), pool_mac_prefix(ctx)?),
                Some(m) => m.to_string(),
                None => String::new(),
            };
            let mut m = BTreeMap::new();
            m.insert("device".to_string(), s(a.need("device")?));
            m.insert("network".to_string(), s(&n));
            m.insert("VM".to_string(), s(&vm));
            m.insert("MAC".to_string(), s(&mac));
            m.insert("MTU".to_string(), Value::Int(mtu.as_int().unwrap_or(1500)));
            m.insert("other_config".to_string(), Value::Struct(BTreeMap::new()));
            m.insert("qos_algorithm_type".to_string(), s(""));
            m.insert(
                "qos_algorithm_params".to_string(),
                Value::Struct(BTreeMap::new()),
            );
            m.insert("locking_mode".to_string(), s("network_default"));
            let v = ctx.call("VIF.create", vec![Value::Struct(m)])?;
            print_uuid(ctx, "VIF", &v)?;
        }
        "vif-import-xl" => {
            let vm = ctx.by_uuid("VM", a.need("vm-uuid")?)?;
            let specs =
                match (a.get("vif"), a.get("filename")) {
                    (Some(v), None) => xnet_xl::parse_vif(v).map(|v| vec![v]),
                    (None, Some(f)) => {
                        let text = std::fs::read_to_string(f)
                            .map_err(|e| Fail(format!("Cannot read {f}: {e}\n")))?;
                        xnet_xl::parse_vif_setting(&text)
                    }
                    _ => return Err(Fail(
                        "This operation requires exactly one of the parameters vif= or filename=\n"
                            .into(),
                    )),
                }
                .map_err(|e| Fail(format!("{e}\n")))?;
            let planned = xl_import::plan(&specs).map_err(|e| Fail(format!("{e}\n")))?;
            // Every network first, so a bad bridge creates nothing.
            let mut nets = vec![];
            for p in &planned {
                let q = format!("field \"bridge\" = \"{}\"", p.bridge);
                let found = ctx.call("network.get_all_records_where", vec![s(&q)])?;
                // The record carries the MTU a VIF without mtu= takes.
                let net = match found {
                    Value::Struct(m) => m.into_iter().next(),
                    _ => None,
                };
                let (net, rec) = net.ok_or_else(|| {
                    Fail(format!("No network has bridge {}: create it first (xe network-create, xe vlan-create)\n", p.bridge))
                })?;
                let mtu = match rec {
                    Value::Struct(r) => r.get("MTU").cloned().unwrap_or(Value::Int(1500)),
                    _ => Value::Int(1500),
                };
                nets.push((net, mtu));
            }
            let mut made = vec![];
            for (p, (net, mtu)) in planned.into_iter().zip(nets) {
                let mut m = p.fields;
                m.insert("network".to_string(), s(&net));
                m.insert("VM".to_string(), s(&vm));
                m.entry("MTU".to_string()).or_insert(mtu);
                match ctx.call("VIF.create", vec![Value::Struct(m)]) {
                    Ok(v) => made.push(v),
                    Err(e) => {
                        // All or nothing: the VIFs made so far go again.
                        for v in made {
                            let _ = ctx.call("VIF.destroy", vec![v]);
                        }
                        return Err(e);
                    }
                }
            }
            for v in made {
                print_uuid(ctx, "VIF", &v)?;
            }
        }
        "vif-destroy" | "vif-plug" | "vif-unplug" => {
            let v = ctx.by_uuid("VIF", a.need("uuid")?)?;
            let m = match cmd {
                "vif-destroy" => "VIF.destroy",
                "vif-plug" => "VIF.plug",
                _ if a.force || a.get("force") == Some("true") => "VIF.unplug_force",
                _ => "VIF.unplug",
            };
            ctx.call(m, vec![s(&v)])?;
        }
        "vif-move" => {
            let v = ctx.by_uuid("VIF", a.need("uuid")?)?;
            let n = ctx.by_uuid("network", a.need("network-uuid")?)?;
            ctx.call("VIF.move", vec![s(&v), s(&n)])?;
        }
        "vif-configure-ipv4" | "vif-configure-ipv6" => {
            let v = ctx.by_uuid("VIF", a.need("uuid")?)?;
            let m = if cmd.ends_with("ipv4") {
                "VIF.configure_ipv4"
            } else {
                "VIF.configure_ipv6"
            };
            ctx.call(
                m,
                vec![
                    s(&v),
                    s(a.need("mode")?),
                    s(a.get("address").unwrap_or("")),
                    s(a.get("gateway").unwrap_or("")),
                ],
            )?;
        }
        "vm-vif-list" => {
            let vm_uuid = a.need("uuid").or_else(|_| a.need("vm"))?.to_string();
            let vm = ctx.by_uuid("VM", &vm_uuid)?;
            let _ = vm;
            let filt = vec![("vm-uuid".to_string(), vm_uuid)];
            let rest = Args {
                cmd: a.cmd.clone(),
                kv: a
                    .kv
                    .iter()
                    .filter(|(k, _)| k == "params")
                    .cloned()
                    .collect(),
                minimal: a.minimal,
                force: a.force,
                all: false,
            };
            return list(ctx, &records::VIF, &rest, &filt);
        }
        "vm-create" => {
            let mut m = BTreeMap::new();
            m.insert("name_label".to_string(), s(a.need("name-label")?));
            m.insert(
                "name_description".to_string(),
                s(a.get("name-description").unwrap_or("")),
            );
            let vm = ctx.call("VM.create", vec![Value::Struct(m)])?;
            print_uuid(ctx, "VM", &vm)?;
        }
        "vm-destroy" => {
            let vm = ctx.by_uuid("VM", a.need("uuid")?)?;
            ctx.call("VM.destroy", vec![s(&vm)])?;
        }
        "host-management-reconfigure" => {
            let p = ctx.by_uuid("PIF", a.need("pif-uuid")?)?;
            ctx.call("host.management_reconfigure", vec![s(&p)])?;
        }
        "host-management-disable" => {
            ctx.call("host.management_disable", vec![])?;
        }
        "pool-management-reconfigure" => {
            let n = ctx.by_uuid("network", a.need("network-uuid")?)?;
            ctx.call("pool.management_reconfigure", vec![s(&n)])?;
        }
        "pool-eject" => {
            let h = ctx.by_uuid("host", a.need("host-uuid")?)?;
            ctx.call("pool.eject", vec![s(&h)])?;
        }
        "pool-join" => {
            let force = a.get("force").is_some_and(|f| f == "true");
            let call = if force {
                "pool.join_force"
            } else {
                "pool.join"
            };
            ctx.call(
                call,
                vec![
                    s(a.need("master-address")?),
                    s(a.need("master-username")?),
                    s(a.need("master-password")?),
                ],
            )?;
        }
        "help" => ctx.out.push_str(&help()),
        _ => {
            return Err(Fail(format!(
                "Unknown command: {cmd}\nFor usage run: 'xe help'\n"
            )))
        }
    }
    Ok(())
}

fn help() -> String {
    let mut cmds: Vec<String> = vec![
        "pif-scan",
        "pif-introduce",
        "pif-forget",
        "pif-plug",
        "pif-unplug",
        "pif-reconfigure-ip",
        "pif-reconfigure-ipv6",
        "pif-set-primary-address-type",
        "network-create",
        "network-destroy",
        "vlan-create",
        "pool-vlan-create",
        "vlan-destroy",
        "bond-create",
        "bond-destroy",
        "bond-set-mode",
        "tunnel-create",
        "tunnel-destroy",
        "network-sriov-create",
        "network-sriov-destroy",
        "vif-create",
        "vif-import-xl",
        "vif-destroy",
        "vif-plug",
        "vif-unplug",
        "vif-move",
        "vif-configure-ipv4",
        "vif-configure-ipv6",
        "vm-vif-list",
        "vm-create",
        "vm-destroy",
        "host-management-reconfigure",
        "host-management-disable",
        "pool-management-reconfigure",
        "pool-join",
        "pool-eject",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for c in records::CLASSES {
        for op in [
            "list",
            "param-list",
            "param-get",
            "param-set",
            "param-add",
            "param-remove",
            "param-clear",
        ] {
            cmds.push(format!("{}-{op}", c.cli));
        }
    }
    cmds.sort();
    format!(
        "Usage: xe <command> [-s server] [-p port] [-u user] [-pw password] [-pwf file] [--nossl] [--minimal] [args]\n\
         Without -s, xe talks to the local xnetd over $XNET_SOCKET (default /run/xnet/xapi.sock).\n\
         With -s, xe uses HTTPS and does not verify the server certificate.\n\nCommands:\n  {}\n",
        cmds.join("\n  ")
    )
}

struct Conn {
    target: Target,
    user: String,
    password: String,
}

fn parse_args(raw: Vec<String>) -> Result<(Args, Conn), String> {
    let mut a = Args {
        cmd: String::new(),
        kv: vec![],
        minimal: false,
        force: false,
        all: false,
    };
    let mut host = None;
    let mut port = 443u16;
    let mut tls = true;
    let mut user = "root".to_string();
    let mut password = String::new();
    let mut it = raw.into_iter();
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("Missing value for {name}"));
        match x.as_str() {
            "--minimal" => a.minimal = true,
            "--force" => a.force = true,
            "--all" => a.all = true,
            "--nossl" => tls = false,
            "-s" | "-h" => host = Some(val(&x)?),
            "-p" => {
                port = val("-p")?
                    .parse()
                    .map_err(|_| "port must be a number".to_string())?
            }
            "-u" => user = val("-u")?,
            "-pw" => password = val("-pw")?,
            "-pwf" => {
                let f = val("-pwf")?;
                password = std::fs::read_to_string(&f)
                    .map_err(|e| format!("{f}: {e}"))?
                    .trim_end()
                    .to_string();
            }
            _ if a.cmd.is_empty() && !x.contains('=') => a.cmd = x,
            _ => match x.split_once('=') {
                Some(("minimal", v)) => a.minimal = v == "true",
                Some((k, v)) => a.kv.push((k.to_string(), v.to_string())),
                None => return Err(format!("Syntax error: '{x}' is not a key=value argument")),
            },
        }
    }
    let target = match host {
        Some(h) => Target::Tcp { host: h, port, tls },
        None => Target::Unix(
            std::env::var("XNET_SOCKET").unwrap_or_else(|_| "/run/xnet/xapi.sock".into()),
        ),
    };
    Ok((
        a,
        Conn {
            target,
            user,
            password,
        },
    ))
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (args, conn) = match parse_args(raw) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    if args.cmd.is_empty() || args.cmd == "help" {
        print!("{}", help());
        return;
    }
    let connect = |target: &Target| match Client::connect(target) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut client = connect(&conn.target);
    let login = vec![s(&conn.user), s(&conn.password), s("1.0"), s("xe")];
    let mut result = client.call("session.login_with_password", login.clone());
    // A pool member sends its clients to the coordinator, once.
    if let Err(CallError::Api(d)) = &result {
        if let (Some("HOST_IS_SLAVE"), Some((host, port))) = (
            d.first().map(String::as_str),
            d.get(1).and_then(|a| xapi_client::parse_address(a)),
        ) {
            client = connect(&Target::Tcp {
                host,
                port,
                tls: true,
            });
            result = client.call("session.login_with_password", login);
        }
    }
    let session = match result {
        Ok(v) => v,
        Err(CallError::Api(d)) => {
            eprint!("{}", errors::describe(&d, &|r| r.to_string()));
            std::process::exit(1);
        }
        Err(CallError::Transport(t)) => {
            eprintln!("{t}");
            std::process::exit(1);
        }
    };
    let mut sess = Session { client, session };
    let (code, out, err) = {
        let mut ctx = Ctx {
            api: &mut sess,
            cache: Cache::default(),
            out: String::new(),
        };
        match command(&mut ctx, &args) {
            Ok(()) => (0, ctx.out, String::new()),
            Err(Fail(e)) => (1, ctx.out, e),
        }
    };
    let _ = sess
        .client
        .call("session.logout", vec![sess.session.clone()]);
    print!("{out}");
    eprint!("{err}");
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory API holding a few records.
    struct Fake(BTreeMap<String, BTreeMap<String, Value>>);
    impl Api for Fake {
        fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, CallError> {
            let (class, op) = method.split_once('.').unwrap();
            let t = self.0.get(class).cloned().unwrap_or_default();
            match op {
                "get_all_records" => Ok(Value::Struct(t.into_iter().collect())),
                "get_by_uuid" => t
                    .iter()
                    .find(|(_, r)| r.as_struct().unwrap()["uuid"] == params[0])
                    .map(|(k, _)| Value::String(k.clone()))
                    .ok_or_else(|| {
                        CallError::Api(vec!["UUID_INVALID".into(), class.into(), text(&params[0])])
                    }),
                "get_record" => Ok(t[params[0].as_str().unwrap()].clone()),
                _ => Err(CallError::Api(vec![
                    "MESSAGE_METHOD_UNKNOWN".into(),
                    method.into(),
                ])),
            }
        }
    }

    fn rec(pairs: &[(&str, Value)]) -> Value {
        Value::Struct(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn fake() -> Fake {
        let mut db = BTreeMap::new();
        let mut nets = BTreeMap::new();
        nets.insert(
            "OpaqueRef:n".to_string(),
            rec(&[
                ("uuid", s("net-u")),
                ("name_label", s("Pool-wide network 0")),
                ("name_description", s("")),
                ("bridge", s("xenbr0")),
                ("tags", Value::Array(vec![s("a"), s("b,c")])),
            ]),
        );
        db.insert("network".to_string(), nets);
        let mut pifs = BTreeMap::new();
        pifs.insert(
            "OpaqueRef:p".to_string(),
            rec(&[
                ("uuid", s("pif-u")),
                ("device", s("eth0")),
                ("MAC", s("52:54:00:AA:00:01")),
                ("currently_attached", Value::Bool(true)),
                ("VLAN", Value::Int(-1)),
                ("network", s("OpaqueRef:n")),
                ("host", s("OpaqueRef:h")),
                ("other_config", rec(&[("k", s("v"))])),
                ("metrics", s("OpaqueRef:pm")),
            ]),
        );
        db.insert("PIF".to_string(), pifs);
        let mut pms = BTreeMap::new();
        pms.insert(
            "OpaqueRef:pm".to_string(),
            rec(&[
                ("uuid", s("pm-u")),
                ("io_read_kbs", Value::Float(12.5)),
                ("io_write_kbs", Value::Float(3.0)),
                ("last_updated", Value::DateTime("20261206T19:00:00Z".into())),
            ]),
        );
        db.insert("PIF_metrics".to_string(), pms);
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "OpaqueRef:h".to_string(),
            rec(&[("uuid", s("host-u")), ("name_label", s("h0"))]),
        );
        db.insert("host".to_string(), hosts);
        Fake(db)
    }

    fn run(args: &[&str]) -> (String, Option<String>) {
        let (a, _) = parse_args(args.iter().map(|x| x.to_string()).collect()).unwrap();
        let mut f = fake();
        let mut ctx = Ctx {
            api: &mut f,
            cache: Cache::default(),
            out: String::new(),
        };
        let r = command(&mut ctx, &a);
        (ctx.out, r.err().map(|Fail(e)| e))
    }

    #[test]
    fn pif_list_default_fields() {
        let (out, err) = run(&["pif-list"]);
        assert!(err.is_none());
        assert_eq!(
            out,
            "uuid ( RO)                  : pif-u\n                device ( RO): eth0\n                   MAC ( RO): 52:54:00:AA:00:01\n    currently-attached ( RO): true\n                  VLAN ( RO): -1\n          network-uuid ( RO): net-u\n             host-uuid ( RO): host-u\n\n\n"
        );
    }

    #[test]
    fn filters_params_minimal() {
        assert_eq!(
            run(&["pif-list", "MAC=52:54:00:aa:00:01", "--minimal"]).0,
            "pif-u\n"
        );
        assert_eq!(run(&["pif-list", "device=eth9", "--minimal"]).0, "\n");
        assert_eq!(
            run(&["pif-list", "other-config:k=v", "params=device", "--minimal"]).0,
            "eth0\n"
        );
        let (out, _) = run(&["network-list", "params=bridge,uuid"]);
        assert_eq!(
            out,
            "uuid ( RO)      : net-u\n    bridge ( RO): xenbr0\n\n\n"
        );
        assert_eq!(
            run(&["network-param-get", "uuid=net-u", "param-name=tags"]).0,
            "a, b,c\n"
        );
        assert_eq!(
            run(&[
                "pif-param-get",
                "uuid=pif-u",
                "param-name=other-config",
                "param-key=k"
            ])
            .0,
            "v\n"
        );
    }

    #[test]
    fn errors_and_usage() {
        let (_, err) = run(&["network-param-list", "uuid=nope"]);
        assert_eq!(
            err.unwrap(),
            "The uuid you supplied was invalid.\ntype: network\nuuid: nope\n"
        );
        let (_, err) = run(&["bogus-cmd"]);
        assert!(err.unwrap().starts_with("Unknown command: bogus-cmd"));
        let (_, err) = run(&["vlan-create"]);
        assert_eq!(
            err.unwrap(),
            "This operation requires the following parameter: pif-uuid\n"
        );
        let (_, err) = run(&["pif-param-set", "uuid=pif-u", "device=x"]);
        assert_eq!(err.unwrap(), "Field 'device' is read-only.\n");
        assert!(parse_args(vec!["pif-list".into(), "-p".into(), "x".into()]).is_err());
    }

    #[test]
    fn rates_are_expensive_in_lists_and_read_from_metrics() {
        let get = |f: &str| run(&["pif-param-get", "uuid=pif-u", &format!("param-name={f}")]);
        assert_eq!(get("io_read_kbs").0, "12.5\n");
        assert_eq!(get("io_write_kbs").0, "3.\n");
        let (out, _) = run(&["pif-list", "params=io_read_kbs"]);
        assert!(
            out.starts_with("io_read_kbs ( RO)    : <expensive field>\n"),
            "{out}"
        );
        let (out, _) = run(&["pif-param-list", "uuid=pif-u"]);
        assert!(out.contains("io_read_kbs ( RO): 12.5\n"), "{out}");
    }

    #[test]
    fn floats_print_as_ocaml() {
        for (x, want) in [
            (0.0, "0."),
            (3.0, "3."),
            (12.5, "12.5"),
            (0.1, "0.1"),
            (1234.5678, "1234.5678"),
            (1.0 / 3.0, "0.333333333333"),
            (1e15, "1e+15"),
            (-2.25, "-2.25"),
        ] {
            assert_eq!(ocaml_float(x), want, "{x}");
        }
    }

    #[test]
    fn prefix_replaces_the_oui() {
        let m = with_prefix(random_mac(), Some([0x00, 0x16, 0x3e]));
        assert!(m.starts_with("00:16:3e:"), "{m}");
        assert_eq!(m.len(), 17);
        assert_eq!(
            with_prefix("02:11:22:33:44:55".into(), None),
            "02:11:22:33:44:55"
        );
    }

    #[test]
    fn random_macs_are_local_unicast_and_vary() {
        let macs: Vec<String> = (0..50).map(|_| random_mac()).collect();
        for m in &macs {
            let b0 = u8::from_str_radix(&m[..2], 16).unwrap();
            assert_eq!(b0 & 3, 2);
            let bytes: std::collections::BTreeSet<&str> = m.split(':').collect();
            assert!(bytes.len() > 1, "{m}: all bytes equal");
        }
        assert!(macs.iter().collect::<std::collections::BTreeSet<_>>().len() > 45);
    }
}
