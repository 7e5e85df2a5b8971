//! API errors printed the xe way: the error's description, then one
//! `<param>: <value>` line per parameter (surplus values as `<extra>`);
//! unknown codes as `Error code:` / `Error parameters:`.

/// (code, description, parameter names) for the errors networking calls raise.
const KNOWN: &[(&str, &str, &[&str])] = &[
    ("HANDLE_INVALID", "You gave an invalid object reference.  The object may have recently been deleted.  The class parameter gives the type of reference given, and the handle parameter echoes the bad value given.", &["class", "handle"]),
    ("UUID_INVALID", "The uuid you supplied was invalid.", &["type", "uuid"]),
    ("SESSION_INVALID", "You gave an invalid session reference.  It may have been invalidated by a server restart, or timed out.  Get a new session handle, using one of the session.login_ calls.  This error does not invalidate the current connection.  The handle parameter echoes the bad value given.", &["handle"]),
    ("SESSION_AUTHENTICATION_FAILED", "The credentials given by the user are incorrect, so access has been denied, and you have not been issued a session handle.", &["username", "message"]),
    ("MESSAGE_METHOD_UNKNOWN", "You tried to call a method that does not exist.  The method name that you used is echoed.", &["method"]),
    ("MESSAGE_PARAMETER_COUNT_MISMATCH", "You tried to call a method with the incorrect number of parameters.  The fully-qualified method name that you used, and the number of received and expected parameters are returned.", &["method", "expected", "received"]),
    ("RBAC_PERMISSION_DENIED", "RBAC permission denied.", &["permission", "message"]),
    ("INVALID_VALUE", "The value given is invalid", &["field", "value"]),
    ("FIELD_TYPE_ERROR", "The value specified is of the wrong type", &["field"]),
    ("MAP_DUPLICATE_KEY", "You tried to add a key-value pair to a map, but that key is already there.", &["type", "param_name", "uuid", "key"]),
    ("OPERATION_NOT_ALLOWED", "You attempted an operation that was not allowed.", &["reason"]),
    ("INTERNAL_ERROR", "The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem.", &["message"]),
    ("MAC_INVALID", "The MAC address specified is not valid.", &["MAC"]),
    // xnet's own (XAPI does not check MACs per network).
    ("MAC_ALREADY_IN_USE", "Another VIF on this network already has this MAC address.", &["MAC", "network", "VIF"]),
    ("VLAN_TAG_INVALID", "You tried to create a VLAN, but the tag you gave was invalid -- it must be between 0 and 4094.  The parameter echoes the VLAN tag you gave.", &["VLAN"]),
    ("PIF_VLAN_EXISTS", "You tried to create a PIF, but it already exists.", &["PIF"]),
    ("VLAN_IN_USE", "Operation cannot be performed because this VLAN is already in use. Please check your network configuration.", &["device", "vlan"]),
    ("PIF_IS_VLAN", "You tried to create a VLAN on top of another VLAN - use the underlying physical PIF/bond instead", &["PIF"]),
    ("PIF_IS_PHYSICAL", "You tried to destroy a PIF, but it represents an aspect of the physical host configuration, and so cannot be destroyed.  The parameter echoes the PIF handle you gave.", &["PIF"]),
    ("PIF_IS_MANAGEMENT_INTERFACE", "The operation you requested cannot be performed because the specified PIF is the management interface.", &["PIF"]),
    ("PIF_ALREADY_BONDED", "This operation cannot be performed because the pif is bonded.", &["PIF"]),
    ("PIF_BOND_NEEDS_MORE_MEMBERS", "A bond must consist of at least two member interfaces", &[]),
    ("PIF_BOND_MORE_THAN_ONE_IP", "Only one PIF on a bond is allowed to have an IP configuration.", &[]),
    ("PIF_CANNOT_BOND_CROSS_HOST", "You cannot bond interfaces across different hosts.", &[]),
    ("PIF_UNMANAGED", "The operation you requested cannot be performed because the specified PIF is not managed by xapi.", &["PIF"]),
    ("PIF_DOES_NOT_ALLOW_UNPLUG", "The operation you requested cannot be performed because the specified PIF does not allow unplug.", &["PIF"]),
    ("PIF_HAS_NO_NETWORK_CONFIGURATION", "PIF has no IP configuration (mode currently set to 'none')", &["PIF"]),
    ("PIF_HAS_NO_V6_NETWORK_CONFIGURATION", "PIF has no IPv6 configuration (mode currently set to 'none')", &["PIF"]),
    ("PIF_CONFIGURATION_ERROR", "An unknown error occurred while attempting to configure an interface.", &["PIF", "msg"]),
    ("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE", "The primary address types are not compatible", &["PIF"]),
    ("PIF_TUNNEL_STILL_EXISTS", "Operation cannot proceed while a tunnel exists on this interface.", &["PIF"]),
    ("PIF_VLAN_STILL_EXISTS", "Operation cannot proceed while a VLAN exists on this interface.", &["PIF"]),
    ("PIF_IS_NOT_SRIOV_CAPABLE", "The selected PIF is not capable of network SR-IOV", &["PIF"]),
    ("CANNOT_PLUG_BOND_SLAVE", "This PIF is a bond slave and cannot be plugged.", &["PIF"]),
    ("CANNOT_ADD_VLAN_TO_BOND_SLAVE", "This PIF is a bond slave and cannot have a VLAN on it.", &["PIF"]),
    ("CANNOT_ADD_TUNNEL_TO_BOND_SLAVE", "This PIF is a bond slave and cannot have a tunnel on it.", &["PIF"]),
    ("CANNOT_CHANGE_PIF_PROPERTIES", "This properties of this PIF cannot be changed. Only the properties of non-bonded physical PIFs, or bond masters can be changed.", &["PIF"]),
    ("INCOMPATIBLE_PIF_PROPERTIES", "These PIFs cannot be bonded, because their properties are different.", &[]),
    ("IS_TUNNEL_ACCESS_PIF", "You tried to create a VLAN or tunnel on top of a tunnel access PIF - use the underlying transport PIF instead.", &["PIF"]),
    ("TRANSPORT_PIF_NOT_CONFIGURED", "The tunnel transport PIF has no IP configuration set.", &["PIF"]),
    ("NETWORK_ALREADY_CONNECTED", "You tried to create a PIF, but the network you tried to attach it to is already attached to some other PIF, and so the creation failed.", &["network", "connected PIF"]),
    ("NETWORK_CONTAINS_PIF", "The network contains active PIFs and cannot be deleted.", &["pifs"]),
    ("NETWORK_CONTAINS_VIF", "The network contains active VIFs and cannot be deleted.", &["vifs"]),
    ("NETWORK_UNMANAGED", "The network is not managed by xapi.", &["network"]),
    ("CANNOT_DESTROY_SYSTEM_NETWORK", "You tried to destroy a system network: these cannot be destroyed.", &["network"]),
    ("BRIDGE_NAME_EXISTS", "The specified bridge already exists.", &["bridge"]),
    ("NETWORK_INCOMPATIBLE_PURPOSES", "You tried to add a purpose to a network but the new purpose is not compatible with an existing purpose of the network or other networks.", &["new_purpose", "conflicting_purpose"]),
    ("INVALID_IP_ADDRESS_SPECIFIED", "A required parameter contained an invalid IP address", &["parameter"]),
    ("INVALID_CIDR_ADDRESS_SPECIFIED", "A required parameter contained an invalid CIDR address (<addr>/<prefix length>)", &["parameter"]),
    ("INVALID_DEVICE", "The device name is invalid", &["device"]),
    ("DEVICE_ALREADY_EXISTS", "A device with the name given already exists on the selected VM", &["device"]),
    ("DEVICE_ALREADY_ATTACHED", "The device is already attached to a VM", &["device"]),
    ("DEVICE_ALREADY_DETACHED", "The device is not currently attached", &["device"]),
    ("VIF_IN_USE", "Network has active VIFs", &["network", "VIF"]),
    ("VM_BAD_POWER_STATE", "You attempted an operation on a VM that was not in an appropriate power state at the time; for example, you attempted to start a VM that was already running.  The parameters returned are the VM's handle, and the expected and actual VM state at the time of the call.", &["vm", "expected", "actual"]),
    ("ADDRESS_VIOLATES_LOCKING_CONSTRAINT", "The specified IP address violates the VIF locking configuration.", &["address"]),
    ("HOST_OFFLINE", "You attempted an operation which involves a host which could not be contacted.", &["host"]),
    ("PIF_NOT_PRESENT", "This host has no PIF on the given network.", &["host", "network"]),
    ("NOT_IN_EMERGENCY_MODE", "This pool is not in emergency mode.", &[]),
    ("OPENVSWITCH_NOT_ACTIVE", "This operation needs the OpenVSwitch networking backend to be enabled on all hosts in the pool.", &[]),
    ("DUPLICATE_PIF_DEVICE_NAME", "A PIF with this specified device name already exists.", &["device"]),
    ("COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS", "Could not find a network interface with the specified device name and MAC address.", &["device", "mac"]),
];

/// The text xe prints for an API failure; `uuid_of` turns refs into uuids.
pub fn describe(desc: &[String], uuid_of: &dyn Fn(&str) -> String) -> String {
    let code = desc.first().map(String::as_str).unwrap_or("");
    let params = desc.get(1..).unwrap_or(&[]);
    let show = |p: &str| {
        if p.starts_with("OpaqueRef:") {
            uuid_of(p)
        } else {
            p.to_string()
        }
    };
    match KNOWN.iter().find(|(c, _, _)| *c == code) {
        Some((_, doc, names)) => {
            let mut out = format!("{doc}\n");
            for (i, p) in params.iter().enumerate() {
                let name = names.get(i).copied().unwrap_or("<extra>");
                out.push_str(&format!("{name}: {}\n", show(p)));
            }
            out
        }
        None => format!(
            "Error code: {code}\nError parameters: {}\n",
            params
                .iter()
                .map(|p| show(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn known_and_unknown() {
        let d = describe(
            &[
                "UUID_INVALID".into(),
                "network".into(),
                "x".into(),
                "y".into(),
            ],
            &|r| r.into(),
        );
        assert_eq!(
            d,
            "The uuid you supplied was invalid.\ntype: network\nuuid: x\n<extra>: y\n"
        );
        let d = describe(
            &["NO_SUCH".into(), "OpaqueRef:1".into(), "b".into()],
            &|_| "u-1".into(),
        );
        assert_eq!(d, "Error code: NO_SUCH\nError parameters: u-1, b\n");
    }
}
