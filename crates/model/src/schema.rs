//! The XenAPI classes xnet serves, as data: every field with XAPI's wire name,
//! type, qualifier and default (reference §1). Generic messages (get_/set_/
//! add_to_/…), records, events and the store are all driven by this table.

use std::collections::BTreeMap;
use xapi_wire::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    Str,
    Int,
    Float,
    Bool,
    DateTime,
    Enum(&'static [&'static str]),
    Ref(&'static str),
    Set(&'static Ty),
    Map(&'static Ty, &'static Ty),
}

/// XAPI qualifiers: `RoC` = StaticRO (constructor only), `RoR` = DynamicRO,
/// `Rw` = generated setter, `Internal` = stored but never on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Qual {
    RoC,
    RoR,
    Rw,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Def {
    /// No default: required in a constructor struct.
    Required,
    Text(&'static str),
    Num(i64),
    Real(f64),
    Flag(bool),
    NullRef,
    EmptySet,
    EmptyMap,
    Pairs(&'static [(&'static str, &'static str)]),
    Items(&'static [&'static str]),
    DateTimeEpoch,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub qual: Qual,
    pub def: Def,
    /// Derived set: the refs of `class` whose `field` points here (not stored).
    pub rel: Option<(&'static str, &'static str)>,
}

#[derive(Debug)]
pub struct Class {
    pub name: &'static str,
    pub fields: &'static [Field],
    /// `create`/`destroy` generated (XAPI's gen_constructor_destructor).
    pub ctor: bool,
    pub by_name_label: bool,
    /// Not persisted (XAPI's PersistNothing): session and task.
    pub volatile: bool,
}

impl Class {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    pub fn wire_fields(&self) -> impl Iterator<Item = &'static Field> {
        self.fields.iter().filter(|f| f.qual != Qual::Internal)
    }
}

impl Field {
    pub fn default_value(&self) -> Option<Value> {
        Some(match self.def {
            Def::Required => return None,
            Def::Text(s) => Value::String(s.into()),
            Def::Num(i) => Value::Int(i),
            Def::Real(x) => Value::Float(x),
            Def::Flag(b) => Value::Bool(b),
            Def::NullRef => Value::String(crate::NULL_REF.into()),
            Def::EmptySet => Value::Array(vec![]),
            Def::EmptyMap => Value::Struct(BTreeMap::new()),
            Def::Pairs(kv) => Value::Struct(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect(),
            ),
            Def::Items(items) => {
                Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
            }
            Def::DateTimeEpoch => Value::DateTime("19700101T00:00:00Z".into()),
        })
    }
    /// Zero value used when a field has no default but a record must be built
    /// (e.g. records created by custom calls).
    pub fn zero_value(&self) -> Value {
        self.default_value().unwrap_or(match self.ty {
            Ty::Str | Ty::Enum(_) => Value::String(String::new()),
            Ty::Ref(_) => Value::String(crate::NULL_REF.into()),
            Ty::Int => Value::Int(0),
            Ty::Float => Value::Float(0.0),
            Ty::Bool => Value::Bool(false),
            Ty::DateTime => Value::DateTime("19700101T00:00:00Z".into()),
            Ty::Set(_) => Value::Array(vec![]),
            Ty::Map(..) => Value::Struct(BTreeMap::new()),
        })
    }
}

const fn f(name: &'static str, ty: Ty, qual: Qual, def: Def) -> Field {
    Field {
        name,
        ty,
        qual,
        def,
        rel: None,
    }
}
const fn rel(name: &'static str, class: &'static str, field: &'static str) -> Field {
    Field {
        name,
        ty: Ty::Set(&Ty::Ref("")),
        qual: Qual::RoR,
        def: Def::EmptySet,
        rel: Some((class, field)),
    }
}

use Def::*;
use Qual::*;
use Ty::*;

const SMAP: Ty = Map(&Str, &Str);
const SSET: Ty = Set(&Str);

pub const NETWORK_OPERATIONS: &[&str] = &["attaching"];
pub const LOCKING_DEFAULT: &[&str] = &["unlocked", "disabled"];
pub const PURPOSES: &[&str] = &["nbd", "insecure_nbd"];
pub const IP_MODES: &[&str] = &["None", "DHCP", "Static"];
pub const IPV6_MODES: &[&str] = &["None", "DHCP", "Static", "Autoconf"];
pub const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6"];
pub const IGMP_STATUS: &[&str] = &["enabled", "disabled", "unknown"];
pub const BOND_MODES: &[&str] = &["balance-slb", "active-backup", "lacp"];
pub const TUNNEL_PROTOCOLS: &[&str] = &["gre", "vxlan"];
pub const SRIOV_MODES: &[&str] = &["sysfs", "modprobe", "manual", "unknown"];
pub const VIF_OPERATIONS: &[&str] = &["attach", "plug", "unplug"];
pub const VIF_LOCKING: &[&str] = &["network_default", "locked", "unlocked", "disabled"];
pub const VIF_IPV4_MODES: &[&str] = &["None", "Static", "DHCP"];
pub const VIF_IPV6_MODES: &[&str] = &["None", "Static", "Autoconf"];
pub const POWER_STATES: &[&str] = &["Halted", "Paused", "Running", "Suspended"];
pub const TASK_STATUS: &[&str] = &["pending", "success", "failure", "cancelling", "cancelled"];
pub const TASK_OPERATIONS: &[&str] = &["cancel", "destroy"];

pub static NETWORK: Class = Class {
    name: "network",
    ctor: true,
    by_name_label: true,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("name_label", Str, Rw, Text("")),
        f("name_description", Str, Rw, Text("")),
        f(
            "allowed_operations",
            Set(&Enum(NETWORK_OPERATIONS)),
            RoR,
            EmptySet,
        ),
        f(
            "current_operations",
            Map(&Str, &Enum(NETWORK_OPERATIONS)),
            RoR,
            EmptyMap,
        ),
        rel("VIFs", "VIF", "network"),
        rel("PIFs", "PIF", "network"),
        f("MTU", Int, Rw, Num(1500)),
        f("other_config", SMAP, Rw, Required),
        f("bridge", Str, RoC, Text("")),
        f("managed", Bool, RoC, Flag(true)),
        f("blobs", Map(&Str, &Ref("blob")), RoR, EmptyMap),
        f("tags", SSET, Rw, EmptySet),
        f(
            "default_locking_mode",
            Enum(LOCKING_DEFAULT),
            RoR,
            Text("unlocked"),
        ),
        f("assigned_ips", Map(&Ref("VIF"), &Str), RoR, EmptyMap),
        f("purpose", Set(&Enum(PURPOSES)), RoR, EmptySet),
    ],
};

pub static PIF: Class = Class {
    name: "PIF",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("device", Str, RoC, Text("")),
        f("network", Ref("network"), RoC, NullRef),
        f("host", Ref("host"), RoC, NullRef),
        f("MAC", Str, RoC, Text("")),
        f("MTU", Int, RoC, Num(1500)),
        f("VLAN", Int, RoC, Num(-1)),
        f("device_name", Str, Internal, Text("")),
        f("metrics", Ref("PIF_metrics"), RoR, NullRef),
        f("physical", Bool, RoR, Flag(false)),
        f("currently_attached", Bool, RoR, Flag(true)),
        f("ip_configuration_mode", Enum(IP_MODES), RoR, Text("None")),
        f("IP", Str, RoR, Text("")),
        f("netmask", Str, RoR, Text("")),
        f("gateway", Str, RoR, Text("")),
        f("DNS", Str, RoR, Text("")),
        f("bond_slave_of", Ref("Bond"), RoR, NullRef),
        rel("bond_master_of", "Bond", "master"),
        f("VLAN_master_of", Ref("VLAN"), RoR, NullRef),
        rel("VLAN_slave_of", "VLAN", "tagged_PIF"),
        f("management", Bool, RoR, Flag(false)),
        f("other_config", SMAP, Rw, EmptyMap),
        f("disallow_unplug", Bool, RoR, Flag(false)),
        rel("tunnel_access_PIF_of", "tunnel", "access_PIF"),
        rel("tunnel_transport_PIF_of", "tunnel", "transport_PIF"),
        f(
            "ipv6_configuration_mode",
            Enum(IPV6_MODES),
            RoR,
            Text("None"),
        ),
        f("IPv6", SSET, RoR, EmptySet),
        f("ipv6_gateway", Str, RoR, Text("")),
        f(
            "primary_address_type",
            Enum(ADDRESS_TYPES),
            RoR,
            Text("IPv4"),
        ),
        f("managed", Bool, RoC, Flag(true)),
        f("properties", SMAP, RoR, EmptyMap),
        f("capabilities", SSET, RoR, EmptySet),
        f(
            "igmp_snooping_status",
            Enum(IGMP_STATUS),
            RoR,
            Text("unknown"),
        ),
        rel("sriov_physical_PIF_of", "network_sriov", "physical_PIF"),
        rel("sriov_logical_PIF_of", "network_sriov", "logical_PIF"),
        f("PCI", Ref("PCI"), RoR, NullRef),
    ],
};

pub static PIF_METRICS: Class = Class {
    name: "PIF_metrics",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("io_read_kbs", Float, RoR, Real(0.0)),
        f("io_write_kbs", Float, RoR, Real(0.0)),
        f("carrier", Bool, RoR, Flag(false)),
        f("vendor_id", Str, RoR, Text("")),
        f("vendor_name", Str, RoR, Text("")),
        f("device_id", Str, RoR, Text("")),
        f("device_name", Str, RoR, Text("")),
        f("speed", Int, RoR, Num(0)),
        f("duplex", Bool, RoR, Flag(false)),
        f("pci_bus_path", Str, RoR, Text("")),
        f("last_updated", DateTime, RoR, DateTimeEpoch),
        f("other_config", SMAP, Rw, EmptyMap),
    ],
};

pub static BOND: Class = Class {
    name: "Bond",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("master", Ref("PIF"), RoC, NullRef),
        rel("slaves", "PIF", "bond_slave_of"),
        f("other_config", SMAP, Rw, EmptyMap),
        f("primary_slave", Ref("PIF"), RoR, NullRef),
        f("mode", Enum(BOND_MODES), RoR, Text("balance-slb")),
        f("properties", SMAP, RoR, EmptyMap),
        f("links_up", Int, RoR, Num(0)),
        f("auto_update_mac", Bool, RoR, Flag(true)),
    ],
};

pub static VLAN: Class = Class {
    name: "VLAN",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("tagged_PIF", Ref("PIF"), RoC, NullRef),
        f("untagged_PIF", Ref("PIF"), RoR, NullRef),
        f("tag", Int, RoC, Num(-1)),
        f("other_config", SMAP, Rw, EmptyMap),
    ],
};

pub static TUNNEL: Class = Class {
    name: "tunnel",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("access_PIF", Ref("PIF"), RoC, NullRef),
        f("transport_PIF", Ref("PIF"), RoC, NullRef),
        f("status", SMAP, Rw, Pairs(&[("active", "false")])),
        f("other_config", SMAP, Rw, EmptyMap),
        f("protocol", Enum(TUNNEL_PROTOCOLS), Rw, Text("gre")),
    ],
};

pub static NETWORK_SRIOV: Class = Class {
    name: "network_sriov",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("physical_PIF", Ref("PIF"), RoC, NullRef),
        f("logical_PIF", Ref("PIF"), RoC, NullRef),
        f("requires_reboot", Bool, RoR, Flag(false)),
        f(
            "configuration_mode",
            Enum(SRIOV_MODES),
            RoR,
            Text("unknown"),
        ),
    ],
};

pub static VIF: Class = Class {
    name: "VIF",
    ctor: true,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f(
            "allowed_operations",
            Set(&Enum(VIF_OPERATIONS)),
            RoR,
            EmptySet,
        ),
        f(
            "current_operations",
            Map(&Str, &Enum(VIF_OPERATIONS)),
            RoR,
            EmptyMap,
        ),
        f("device", Str, RoC, Required),
        f("network", Ref("network"), RoC, Required),
        f("VM", Ref("VM"), RoC, Required),
        f("MAC", Str, RoC, Required),
        f("MTU", Int, RoC, Required),
        f("reserved", Bool, Internal, Flag(false)),
        f("other_config", SMAP, Rw, Required),
        f("currently_attached", Bool, RoC, Flag(false)),
        f("status_code", Int, RoR, Num(0)),
        f("status_detail", Str, RoR, Text("")),
        f("runtime_properties", SMAP, RoR, EmptyMap),
        f("qos_algorithm_type", Str, Rw, Required),
        f("qos_algorithm_params", SMAP, Rw, Required),
        f("qos_supported_algorithms", SSET, RoR, EmptySet),
        f("metrics", Ref("VIF_metrics"), RoR, NullRef),
        f("MAC_autogenerated", Bool, RoR, Flag(false)),
        f(
            "locking_mode",
            Enum(VIF_LOCKING),
            RoC,
            Text("network_default"),
        ),
        f("ipv4_allowed", SSET, RoC, EmptySet),
        f("ipv6_allowed", SSET, RoC, EmptySet),
        f(
            "ipv4_configuration_mode",
            Enum(VIF_IPV4_MODES),
            RoR,
            Text("None"),
        ),
        f("ipv4_addresses", SSET, RoR, EmptySet),
        f("ipv4_gateway", Str, RoR, Text("")),
        f(
            "ipv6_configuration_mode",
            Enum(VIF_IPV6_MODES),
            RoR,
            Text("None"),
        ),
        f("ipv6_addresses", SSET, RoR, EmptySet),
        f("ipv6_gateway", Str, RoR, Text("")),
        f("reserved_pci", Ref("PCI"), Internal, NullRef),
        f("trunks", Set(&Int), RoC, EmptySet),
    ],
};

pub static VIF_METRICS: Class = Class {
    name: "VIF_metrics",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("io_read_kbs", Float, RoR, Real(0.0)),
        f("io_write_kbs", Float, RoR, Real(0.0)),
        f("last_updated", DateTime, RoR, DateTimeEpoch),
        f("other_config", SMAP, Rw, EmptyMap),
    ],
};

pub static VM: Class = Class {
    name: "VM",
    ctor: true,
    by_name_label: true,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("name_label", Str, Rw, Required),
        f("name_description", Str, Rw, Text("")),
        f("power_state", Enum(POWER_STATES), RoR, Text("Halted")),
        f("domid", Int, RoR, Num(-1)),
        f("resident_on", Ref("host"), RoR, NullRef),
        rel("VIFs", "VIF", "VM"),
        f("other_config", SMAP, Rw, EmptyMap),
        f("is_a_template", Bool, Rw, Flag(false)),
        f("is_control_domain", Bool, RoR, Flag(false)),
    ],
};

pub static HOST: Class = Class {
    name: "host",
    ctor: false,
    by_name_label: true,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("name_label", Str, Rw, Text("")),
        f("name_description", Str, Rw, Text("")),
        f("API_version_major", Int, RoR, Num(2)),
        f("API_version_minor", Int, RoR, Num(23)),
        f("API_version_vendor", Str, RoR, Text("XenSource")),
        f("API_version_vendor_implementation", SMAP, RoR, EmptyMap),
        f("enabled", Bool, RoR, Flag(true)),
        f("software_version", SMAP, RoC, EmptyMap),
        f("other_config", SMAP, Rw, EmptyMap),
        rel("resident_VMs", "VM", "resident_on"),
        rel("PIFs", "PIF", "host"),
        f("hostname", Str, Rw, Text("")),
        f("address", Str, Rw, Text("")),
        f("metrics", Ref("host_metrics"), RoR, NullRef),
        // XAPI's inventory MANAGEMENT_INTERFACE (a bridge name).
        f("management_bridge", Str, Internal, Text("")),
        // NICs the host's agent sees: device → MAC, device → position.
        f("nic_macs", SMAP, Internal, EmptyMap),
        f("nic_positions", SMAP, Internal, EmptyMap),
    ],
};

pub static POOL: Class = Class {
    name: "pool",
    ctor: false,
    by_name_label: false,
    volatile: false,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("name_label", Str, Rw, Text("")),
        f("name_description", Str, Rw, Text("")),
        f("master", Ref("host"), RoR, NullRef),
        f("other_config", SMAP, Rw, EmptyMap),
        f("ha_enabled", Bool, RoR, Flag(false)),
        f("redo_log_enabled", Bool, RoR, Flag(false)),
        f("igmp_snooping_enabled", Bool, RoR, Flag(false)),
    ],
};

pub static SESSION: Class = Class {
    name: "session",
    ctor: false,
    by_name_label: false,
    volatile: true,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("this_host", Ref("host"), RoR, NullRef),
        f("this_user", Ref("user"), RoR, NullRef),
        f("last_active", DateTime, RoR, DateTimeEpoch),
        f("pool", Bool, RoR, Flag(false)),
        f("other_config", SMAP, Rw, EmptyMap),
        f("is_local_superuser", Bool, RoR, Flag(false)),
        f("subject", Ref("subject"), RoR, NullRef),
        f("validation_time", DateTime, RoR, DateTimeEpoch),
        f("auth_user_sid", Str, RoR, Text("")),
        f("auth_user_name", Str, RoR, Text("")),
        f("rbac_permissions", SSET, RoR, EmptySet),
        rel("tasks", "task", "session"),
        f("parent", Ref("session"), RoR, NullRef),
        f("originator", Str, RoR, Text("")),
        f("client_certificate", Bool, RoR, Flag(false)),
    ],
};

pub static TASK: Class = Class {
    name: "task",
    ctor: false,
    by_name_label: true,
    volatile: true,
    fields: &[
        f("uuid", Str, RoR, Text("")),
        f("name_label", Str, RoR, Text("")),
        f("name_description", Str, RoR, Text("")),
        f(
            "allowed_operations",
            Set(&Enum(TASK_OPERATIONS)),
            RoR,
            EmptySet,
        ),
        f(
            "current_operations",
            Map(&Str, &Enum(TASK_OPERATIONS)),
            RoR,
            EmptyMap,
        ),
        f("created", DateTime, RoR, DateTimeEpoch),
        f("finished", DateTime, RoR, DateTimeEpoch),
        f("status", Enum(TASK_STATUS), RoR, Text("pending")),
        f("resident_on", Ref("host"), RoR, NullRef),
        f("progress", Float, RoR, Real(0.0)),
        f("type", Str, RoR, Text("")),
        f("result", Str, RoR, Text("")),
        f("error_info", SSET, RoR, EmptySet),
        f("other_config", SMAP, Rw, EmptyMap),
        f("subtask_of", Ref("task"), RoR, NullRef),
        rel("subtasks", "task", "subtask_of"),
        f("backtrace", Str, RoR, Text("")),
        f("session", Ref("session"), Internal, NullRef),
    ],
};

pub static CLASSES: &[&Class] = &[
    &SESSION,
    &POOL,
    &HOST,
    &NETWORK,
    &PIF,
    &PIF_METRICS,
    &BOND,
    &VLAN,
    &TUNNEL,
    &NETWORK_SRIOV,
    &VIF,
    &VIF_METRICS,
    &VM,
    &TASK,
];

/// Looks a class up by its wire name (exact case, as XAPI).
pub fn class(name: &str) -> Option<&'static Class> {
    CLASSES.iter().copied().find(|c| c.name == name)
}

/// Looks a class up case-insensitively (event subscriptions, `event.from` classes).
pub fn class_ci(name: &str) -> Option<&'static Class> {
    CLASSES
        .iter()
        .copied()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}
