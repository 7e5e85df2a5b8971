//! xe's record tables (xapi-cli-server records.ml): each class's CLI fields in
//! xe's order, where each value comes from, its tag and how it is set.

/// Where a CLI field's value comes from in the API record(s).
#[derive(Clone, Copy)]
pub enum Src {
    F(&'static str),
    /// A ref field shown as the target's uuid: (field, class).
    Uuid(&'static str, &'static str),
    /// A set of refs shown as uuids.
    Uuids(&'static str, &'static str),
    /// A field of the record a ref points to: (ref field, class, field).
    Via(&'static str, &'static str, &'static str),
    /// A PIF_metrics field of a PIF.
    Metric(&'static str),
    Speed,
    Duplex,
    /// Expensive fields xe only computes on request.
    Expensive,
    /// A rate in KiB/s from the metrics record (class) the `metrics` ref
    /// points to; expensive: `-list` shows `<expensive field>`.
    Kbs(&'static str, &'static str),
}

/// How param-set/add/remove change a field.
#[derive(Clone, Copy, PartialEq)]
pub enum Set {
    No,
    /// `<Class>.set_<field>(self, value)` or a custom call with that shape.
    Call(&'static str),
    /// A map with add_to_/remove_from_: the API field name.
    Map(&'static str),
    /// A map changed by `<call>(self, key, value)` (set_property).
    Prop(&'static str),
    /// A set: add call, remove call, and (optionally) a whole-set setter.
    Items(&'static str, &'static str, Option<&'static str>),
}

pub struct Fld {
    pub name: &'static str,
    pub src: Src,
    pub tag: &'static str,
    pub set: Set,
}

pub struct Cls {
    pub cli: &'static str,
    pub api: &'static str,
    pub fields: &'static [Fld],
    pub list: &'static [&'static str],
}

const fn ro(name: &'static str, f: &'static str) -> Fld {
    Fld {
        name,
        src: Src::F(f),
        tag: "RO",
        set: Set::No,
    }
}
const fn x(name: &'static str, src: Src, tag: &'static str, set: Set) -> Fld {
    Fld {
        name,
        src,
        tag,
        set,
    }
}
use Src::*;

pub static PIF: Cls = Cls {
    cli: "pif",
    api: "PIF",
    list: &[
        "uuid",
        "device",
        "MAC",
        "currently-attached",
        "VLAN",
        "network-uuid",
        "host-uuid",
    ],
    fields: &[
        ro("uuid", "uuid"),
        ro("device", "device"),
        ro("MAC", "MAC"),
        ro("physical", "physical"),
        ro("managed", "managed"),
        ro("currently-attached", "currently_attached"),
        ro("MTU", "MTU"),
        ro("VLAN", "VLAN"),
        x(
            "vlan-master-of",
            Uuid("VLAN_master_of", "VLAN"),
            "RO",
            Set::No,
        ),
        x(
            "vlan-slave-of",
            Uuids("VLAN_slave_of", "VLAN"),
            "SRO",
            Set::No,
        ),
        x(
            "bond-master-of",
            Uuids("bond_master_of", "Bond"),
            "SRO",
            Set::No,
        ),
        x(
            "bond-slave-of",
            Uuid("bond_slave_of", "Bond"),
            "RO",
            Set::No,
        ),
        x(
            "sriov-physical-PIF-of",
            Uuids("sriov_physical_PIF_of", "network_sriov"),
            "SRO",
            Set::No,
        ),
        x(
            "sriov-logical-PIF-of",
            Uuids("sriov_logical_PIF_of", "network_sriov"),
            "SRO",
            Set::No,
        ),
        x(
            "tunnel-access-PIF-of",
            Uuids("tunnel_access_PIF_of", "tunnel"),
            "SRO",
            Set::No,
        ),
        x(
            "tunnel-transport-PIF-of",
            Uuids("tunnel_transport_PIF_of", "tunnel"),
            "SRO",
            Set::No,
        ),
        ro("management", "management"),
        x("network-uuid", Uuid("network", "network"), "RO", Set::No),
        x(
            "network-name-label",
            Via("network", "network", "name_label"),
            "RO",
            Set::No,
        ),
        x("host-uuid", Uuid("host", "host"), "RO", Set::No),
        x(
            "host-name-label",
            Via("host", "host", "name_label"),
            "RO",
            Set::No,
        ),
        ro("IP-configuration-mode", "ip_configuration_mode"),
        ro("IP", "IP"),
        ro("netmask", "netmask"),
        ro("gateway", "gateway"),
        ro("IPv6-configuration-mode", "ipv6_configuration_mode"),
        x("IPv6", F("IPv6"), "SRO", Set::No),
        ro("IPv6-gateway", "ipv6_gateway"),
        ro("primary-address-type", "primary_address_type"),
        ro("DNS", "DNS"),
        x(
            "properties",
            F("properties"),
            "MRO",
            Set::Prop("PIF.set_property"),
        ),
        x("capabilities", F("capabilities"), "SRO", Set::No),
        x(
            "io_read_kbs",
            Kbs("PIF_metrics", "io_read_kbs"),
            "RO",
            Set::No,
        ),
        x(
            "io_write_kbs",
            Kbs("PIF_metrics", "io_write_kbs"),
            "RO",
            Set::No,
        ),
        x("carrier", Metric("carrier"), "RO", Set::No),
        x("vendor-id", Metric("vendor_id"), "RO", Set::No),
        x("vendor-name", Metric("vendor_name"), "RO", Set::No),
        x("device-id", Metric("device_id"), "RO", Set::No),
        x("device-name", Metric("device_name"), "RO", Set::No),
        x("speed", Speed, "RO", Set::No),
        x("duplex", Duplex, "RO", Set::No),
        x(
            "disallow-unplug",
            F("disallow_unplug"),
            "RW",
            Set::Call("PIF.set_disallow_unplug"),
        ),
        x("pci-bus-path", Metric("pci_bus_path"), "RO", Set::No),
        x(
            "other-config",
            F("other_config"),
            "MRW",
            Set::Map("other_config"),
        ),
        ro("igmp-snooping-status", "igmp_snooping_status"),
    ],
};

pub static NETWORK: Cls = Cls {
    cli: "network",
    api: "network",
    list: &["uuid", "name-label", "name-description", "bridge"],
    fields: &[
        ro("uuid", "uuid"),
        x(
            "name-label",
            F("name_label"),
            "RW",
            Set::Call("network.set_name_label"),
        ),
        x(
            "name-description",
            F("name_description"),
            "RW",
            Set::Call("network.set_name_description"),
        ),
        x("VIF-uuids", Uuids("VIFs", "VIF"), "SRO", Set::No),
        x("PIF-uuids", Uuids("PIFs", "PIF"), "SRO", Set::No),
        x("MTU", F("MTU"), "RW", Set::Call("network.set_MTU")),
        ro("bridge", "bridge"),
        ro("managed", "managed"),
        x(
            "other-config",
            F("other_config"),
            "MRW",
            Set::Map("other_config"),
        ),
        x("blobs", F("blobs"), "MRO", Set::No),
        x(
            "tags",
            F("tags"),
            "SRW",
            Set::Items("network.add_tags", "network.remove_tags", None),
        ),
        x(
            "default-locking-mode",
            F("default_locking_mode"),
            "RW",
            Set::Call("network.set_default_locking_mode"),
        ),
        x(
            "purpose",
            F("purpose"),
            "SRW",
            Set::Items("network.add_purpose", "network.remove_purpose", None),
        ),
    ],
};

pub static BOND: Cls = Cls {
    cli: "bond",
    api: "Bond",
    list: &["uuid", "master", "slaves"],
    fields: &[
        ro("uuid", "uuid"),
        x("master", Uuid("master", "PIF"), "RO", Set::No),
        x("slaves", Uuids("slaves", "PIF"), "SRO", Set::No),
        x("mode", F("mode"), "RW", Set::Call("Bond.set_mode")),
        x(
            "properties",
            F("properties"),
            "MRO",
            Set::Prop("Bond.set_property"),
        ),
        x("primary-slave", Uuid("primary_slave", "PIF"), "RO", Set::No),
        ro("links-up", "links_up"),
        ro("auto-update-mac", "auto_update_mac"),
    ],
};

pub static VLAN: Cls = Cls {
    cli: "vlan",
    api: "VLAN",
    list: &["uuid", "tagged-PIF", "untagged-PIF", "tag"],
    fields: &[
        ro("uuid", "uuid"),
        x("tagged-PIF", Uuid("tagged_PIF", "PIF"), "RO", Set::No),
        x("untagged-PIF", Uuid("untagged_PIF", "PIF"), "RO", Set::No),
        ro("tag", "tag"),
    ],
};

pub static TUNNEL: Cls = Cls {
    cli: "tunnel",
    api: "tunnel",
    list: &["uuid", "access-PIF", "transport-PIF", "status"],
    fields: &[
        ro("uuid", "uuid"),
        x("access-PIF", Uuid("access_PIF", "PIF"), "RO", Set::No),
        x("transport-PIF", Uuid("transport_PIF", "PIF"), "RO", Set::No),
        x("status", F("status"), "MRW", Set::Map("status")),
        x(
            "other-config",
            F("other_config"),
            "MRW",
            Set::Map("other_config"),
        ),
        x(
            "protocol",
            F("protocol"),
            "RW",
            Set::Call("tunnel.set_protocol"),
        ),
    ],
};

pub static SRIOV: Cls = Cls {
    cli: "network-sriov",
    api: "network_sriov",
    // xe asks for physical-pif/logical-pif/configuration-mode, names that do
    // not exist: only uuid and requires-reboot print (XAPI's quirk, kept).
    list: &[
        "uuid",
        "physical-pif",
        "logical-pif",
        "requires-reboot",
        "configuration-mode",
    ],
    fields: &[
        ro("uuid", "uuid"),
        x("physical-PIF", Uuid("physical_PIF", "PIF"), "RO", Set::No),
        x("logical-PIF", Uuid("logical_PIF", "PIF"), "RO", Set::No),
        ro("requires-reboot", "requires_reboot"),
        x("remaining-capacity", Expensive, "RO", Set::No),
    ],
};

pub static VIF: Cls = Cls {
    cli: "vif",
    api: "VIF",
    list: &["uuid", "vm-uuid", "device", "network-uuid"],
    fields: &[
        ro("uuid", "uuid"),
        x("vm-uuid", Uuid("VM", "VM"), "RO", Set::No),
        x(
            "vm-name-label",
            Via("VM", "VM", "name_label"),
            "RO",
            Set::No,
        ),
        x(
            "allowed-operations",
            F("allowed_operations"),
            "SRO",
            Set::No,
        ),
        x(
            "current-operations",
            F("current_operations"),
            "SRO",
            Set::No,
        ),
        ro("device", "device"),
        ro("MAC", "MAC"),
        ro("MAC-autogenerated", "MAC_autogenerated"),
        ro("MTU", "MTU"),
        ro("currently-attached", "currently_attached"),
        x(
            "qos_algorithm_type",
            F("qos_algorithm_type"),
            "RW",
            Set::Call("VIF.set_qos_algorithm_type"),
        ),
        x(
            "qos_algorithm_params",
            F("qos_algorithm_params"),
            "MRW",
            Set::Map("qos_algorithm_params"),
        ),
        x(
            "qos_supported_algorithms",
            F("qos_supported_algorithms"),
            "SRO",
            Set::No,
        ),
        x(
            "other-config",
            F("other_config"),
            "MRW",
            Set::Map("other_config"),
        ),
        x("network-uuid", Uuid("network", "network"), "RO", Set::No),
        x(
            "network-name-label",
            Via("network", "network", "name_label"),
            "RO",
            Set::No,
        ),
        x(
            "io_read_kbs",
            Kbs("VIF_metrics", "io_read_kbs"),
            "RO",
            Set::No,
        ),
        x(
            "io_write_kbs",
            Kbs("VIF_metrics", "io_write_kbs"),
            "RO",
            Set::No,
        ),
        x(
            "locking-mode",
            F("locking_mode"),
            "RW",
            Set::Call("VIF.set_locking_mode"),
        ),
        x(
            "ipv4-allowed",
            F("ipv4_allowed"),
            "SRW",
            Set::Items(
                "VIF.add_ipv4_allowed",
                "VIF.remove_ipv4_allowed",
                Some("VIF.set_ipv4_allowed"),
            ),
        ),
        x(
            "ipv6-allowed",
            F("ipv6_allowed"),
            "SRW",
            Set::Items(
                "VIF.add_ipv6_allowed",
                "VIF.remove_ipv6_allowed",
                Some("VIF.set_ipv6_allowed"),
            ),
        ),
        ro("ipv4-configuration-mode", "ipv4_configuration_mode"),
        x("ipv4-addresses", F("ipv4_addresses"), "SRO", Set::No),
        ro("ipv4-gateway", "ipv4_gateway"),
        ro("ipv6-configuration-mode", "ipv6_configuration_mode"),
        x("ipv6-addresses", F("ipv6_addresses"), "SRO", Set::No),
        ro("ipv6-gateway", "ipv6_gateway"),
    ],
};

pub static HOST: Cls = Cls {
    cli: "host",
    api: "host",
    list: &["uuid", "name-label", "name-description"],
    fields: &[
        ro("uuid", "uuid"),
        x(
            "name-label",
            F("name_label"),
            "RW",
            Set::Call("host.set_name_label"),
        ),
        x(
            "name-description",
            F("name_description"),
            "RW",
            Set::Call("host.set_name_description"),
        ),
        ro("enabled", "enabled"),
        ro("API-version-major", "API_version_major"),
        ro("API-version-minor", "API_version_minor"),
        ro("API-version-vendor", "API_version_vendor"),
        x(
            "API-version-vendor-implementation",
            F("API_version_vendor_implementation"),
            "MRO",
            Set::No,
        ),
        x("software-version", F("software_version"), "MRO", Set::No),
        x(
            "other-config",
            F("other_config"),
            "MRW",
            Set::Map("other_config"),
        ),
        x(
            "hostname",
            F("hostname"),
            "RW",
            Set::Call("host.set_hostname"),
        ),
        ro("address", "address"),
        x("PIF-uuids", Uuids("PIFs", "PIF"), "SRO", Set::No),
    ],
};

pub static POOL: Cls = Cls {
    cli: "pool",
    api: "pool",
    list: &["uuid", "name-label", "name-description", "master"],
    fields: &[
        ro("uuid", "uuid"),
        x(
            "name-label",
            F("name_label"),
            "RW",
            Set::Call("pool.set_name_label"),
        ),
        x(
            "name-description",
            F("name_description"),
            "RW",
            Set::Call("pool.set_name_description"),
        ),
        x("master", Uuid("master", "host"), "RO", Set::No),
        x(
            "other-config",
            F("other_config"),
            "MRW",
            Set::Map("other_config"),
        ),
        ro("ha-enabled", "ha_enabled"),
        ro("igmp-snooping-enabled", "igmp_snooping_enabled"),
    ],
};

pub static VM: Cls = Cls {
    cli: "vm",
    api: "VM",
    list: &["uuid", "name-label", "power-state"],
    fields: &[
        ro("uuid", "uuid"),
        x(
            "name-label",
            F("name_label"),
            "RW",
            Set::Call("VM.set_name_label"),
        ),
        x(
            "name-description",
            F("name_description"),
            "RW",
            Set::Call("VM.set_name_description"),
        ),
        ro("power-state", "power_state"),
        ro("dom-id", "domid"),
        x("resident-on", Uuid("resident_on", "host"), "RO", Set::No),
        ro("is-control-domain", "is_control_domain"),
        x(
            "other-config",
            F("other_config"),
            "MRW",
            Set::Map("other_config"),
        ),
    ],
};

pub static CLASSES: &[&Cls] = &[
    &PIF, &NETWORK, &BOND, &VLAN, &TUNNEL, &SRIOV, &VIF, &HOST, &POOL, &VM,
];
