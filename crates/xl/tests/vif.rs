//! The examples of Xen's xl-network-configuration(5), the seed strings, and
//! one rejection per error variant.

use std::net::IpAddr;

use xnet_xl::{
    parse_mac, parse_rate, parse_vif, parse_vif_setting, Rate, RateFault, VifSpec, VifType, XlError,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rate(bytes_per_sec: u64, interval_us: u64) -> Rate {
    Rate {
        bytes_per_sec,
        interval_us,
    }
}

fn rate_fault(s: &str) -> RateFault {
    match parse_rate(s) {
        Err(XlError::BadRate { rate, fault }) => {
            assert_eq!(rate, s);
            fault
        }
        other => panic!("{s}: expected BadRate, got {other:?}"),
    }
}

// ---- doc examples ----

#[test]
fn doc_syntax_examples() {
    let v = parse_vif("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0").unwrap();
    assert_eq!(v.mac, Some([0x00, 0x16, 0x3e, 0x74, 0x3d, 0x76]));
    assert_eq!(v.model.as_deref(), Some("rtl8139"));
    assert_eq!(v.bridge.as_deref(), Some("xenbr0"));

    let v = parse_vif("mac=00:16:3E:74:34:32").unwrap();
    assert_eq!(v.mac, Some([0x00, 0x16, 0x3e, 0x74, 0x34, 0x32]));

    // "'' # The empty string": a vif with every default.
    assert_eq!(parse_vif("").unwrap(), VifSpec::default());
}

#[test]
fn doc_config_example() {
    let cfg = "vif = [ 'mac=00:16:3E:74:34:32', 'mac=00:16:3e:5f:48:e4,bridge=xenbr1' ]";
    let vifs = parse_vif_setting(cfg).unwrap();
    assert_eq!(vifs.len(), 2);
    assert_eq!(vifs[0].mac, Some([0x00, 0x16, 0x3e, 0x74, 0x34, 0x32]));
    assert_eq!(vifs[0].bridge, None);
    assert_eq!(vifs[1].mac, Some([0x00, 0x16, 0x3e, 0x5f, 0x48, 0xe4]));
    assert_eq!(vifs[1].bridge.as_deref(), Some("xenbr1"));
}

#[test]
fn doc_rate_examples() {
    // "up to 10 megabits every second"
    assert_eq!(parse_rate("10Mb/s").unwrap(), rate(1_250_000, 50_000));
    // "up to 250 kilobytes every second"
    assert_eq!(parse_rate("250KB/s").unwrap(), rate(250_000, 50_000));
    // "20,000 bytes in every 20 millisecond period": decimal units.
    let r = parse_rate("1MB/s@20ms").unwrap();
    assert_eq!(r, rate(1_000_000, 20_000));
    assert_eq!(r.bytes_per_interval(), 20_000);
}

#[test]
fn doc_keywords() {
    let v = parse_vif("type=vif").unwrap();
    assert_eq!(v.kind, VifType::Vif);
    let v = parse_vif("type=ioemu,model=e1000").unwrap();
    assert_eq!(v.kind, VifType::Ioemu);
    assert_eq!(v.model.as_deref(), Some("e1000"));

    let v = parse_vif("gatewaydev=eth0,devid=3,mtu=9000").unwrap();
    assert_eq!(v.gatewaydev.as_deref(), Some("eth0"));
    assert_eq!(v.devid, Some(3));
    assert_eq!(v.mtu, Some(9000));

    // "netdev is a deprecated alias" of gatewaydev.
    let v = parse_vif("netdev=eth1").unwrap();
    assert_eq!(v.gatewaydev.as_deref(), Some("eth1"));

    // xl accepts accel and ignores it.
    assert_eq!(parse_vif("accel=x").unwrap(), VifSpec::default());
}

// ---- seed strings ----

#[test]
fn seed_mac_bridge() {
    let v = parse_vif("mac=00:16:3e:5f:48:e4,bridge=xenbr0").unwrap();
    assert_eq!(
        v,
        VifSpec {
            mac: Some([0x00, 0x16, 0x3e, 0x5f, 0x48, 0xe4]),
            bridge: Some("xenbr0".into()),
            ..VifSpec::default()
        }
    );
}

#[test]
fn seed_ioemu() {
    let v = parse_vif("bridge=xenbr1,mac=00:16:3e:00:00:01,type=ioemu,model=e1000").unwrap();
    assert_eq!(v.bridge.as_deref(), Some("xenbr1"));
    assert_eq!(v.mac, Some([0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]));
    assert_eq!(v.kind, VifType::Ioemu);
    assert_eq!(v.model.as_deref(), Some("e1000"));
}

#[test]
fn seed_vifname_script_ip_rate() {
    let v = parse_vif("vifname=web0.0,script=vif-xnet,ip=192.0.2.10 192.0.2.11,rate=100Mb/s@20ms")
        .unwrap();
    assert_eq!(v.vifname.as_deref(), Some("web0.0"));
    assert_eq!(v.script.as_deref(), Some("vif-xnet"));
    assert_eq!(v.ip, vec![ip("192.0.2.10"), ip("192.0.2.11")]);
    assert_eq!(v.rate, Some(rate(12_500_000, 20_000)));
    // 12_500_000 / 1024 = 12207.03 -> rounded up.
    assert_eq!(v.rate_kib_per_sec(), Some(12_208));
}

#[test]
fn seed_rate_default_interval_and_backend() {
    let v = parse_vif("rate=10MB/s").unwrap();
    assert_eq!(v.rate, Some(rate(10_000_000, 50_000)));
    let v = parse_vif("backend=driverdom").unwrap();
    assert_eq!(v.backend.as_deref(), Some("driverdom"));
}

#[test]
fn seed_config_text() {
    let cfg = r#"
# a guest
name = "web"   # trailing comment
memory = 1024; vcpus = 2
disk = [ 'phy:/dev/vg/web,xvda,w' ]   # not ours: '#' and ']' in strings
extra = "console=hvc0 # not a comment ]"
vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0',   # first
        # a comment line inside the list
        "bridge=xenbr1" ,
      ]
on_crash = 'restart'
"#;
    let vifs = parse_vif_setting(cfg).unwrap();
    assert_eq!(vifs.len(), 2);
    assert_eq!(vifs[0].mac, Some([0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]));
    assert_eq!(vifs[0].bridge.as_deref(), Some("xenbr0"));
    assert_eq!(vifs[1].bridge.as_deref(), Some("xenbr1"));
    assert_eq!(vifs[1].mac, None);
}

// ---- parsing details ----

#[test]
fn items_trimmed_and_empty_items_skipped() {
    let v = parse_vif(" mac=00:16:3e:00:00:01 , , bridge=xenbr0 ,").unwrap();
    assert_eq!(v.mac, Some([0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]));
    assert_eq!(v.bridge.as_deref(), Some("xenbr0"));
}

#[test]
fn ip_list_mixed_families_and_spacing() {
    let v = parse_vif("ip=192.0.2.1   2001:db8::1").unwrap();
    assert_eq!(v.ip, vec![ip("192.0.2.1"), ip("2001:db8::1")]);
}

#[test]
fn model_tokens() {
    for m in ["virtio-net", "ne2k_pci", "rtl8139"] {
        assert_eq!(
            parse_vif(&format!("model={m}")).unwrap().model.as_deref(),
            Some(m)
        );
    }
}

#[test]
fn rate_units() {
    assert_eq!(parse_rate("8b/s").unwrap().bytes_per_sec, 1);
    assert_eq!(parse_rate("1B/s").unwrap().bytes_per_sec, 1);
    assert_eq!(parse_rate("1kB/s").unwrap().bytes_per_sec, 1_000);
    assert_eq!(parse_rate("8Kb/s").unwrap().bytes_per_sec, 1_000);
    assert_eq!(parse_rate("8kb/s").unwrap().bytes_per_sec, 1_000);
    assert_eq!(parse_rate("1GB/s").unwrap().bytes_per_sec, 1_000_000_000);
    assert_eq!(parse_rate("8Gb/s").unwrap().bytes_per_sec, 1_000_000_000);
    assert_eq!(parse_rate("1MB/s@500us").unwrap().interval_us, 500);
    assert_eq!(parse_rate("1MB/s@2s").unwrap().interval_us, 2_000_000);
}

#[test]
fn rate_kib_rounding() {
    let spec = |r: &str| parse_vif(&format!("rate={r}")).unwrap();
    assert_eq!(spec("1B/s").rate_kib_per_sec(), Some(1));
    assert_eq!(spec("1024B/s").rate_kib_per_sec(), Some(1));
    assert_eq!(spec("1025B/s").rate_kib_per_sec(), Some(2));
    assert_eq!(VifSpec::default().rate_kib_per_sec(), None);
}

#[test]
fn config_without_vif_is_empty() {
    assert!(parse_vif_setting("name = 'x'\nmemory = 512\n")
        .unwrap()
        .is_empty());
    assert!(parse_vif_setting("").unwrap().is_empty());
    assert!(parse_vif_setting("vif = []").unwrap().is_empty());
}

#[test]
fn config_last_assignment_wins_and_plus_appends() {
    let cfg = "vif = ['bridge=a']\nvif = ['bridge=b']\nvif+=['bridge=c']";
    let names: Vec<_> = parse_vif_setting(cfg)
        .unwrap()
        .into_iter()
        .map(|v| v.bridge.unwrap())
        .collect();
    assert_eq!(names, ["b", "c"]);
}

#[test]
fn config_string_escapes() {
    let vifs = parse_vif_setting(r#"vif = [ "bridge=xen\"br" ]"#);
    // The escape is decoded before parse_vif sees the element.
    assert_eq!(vifs.unwrap()[0].bridge.as_deref(), Some("xen\"br"));
}

// ---- one rejection per error variant ----

#[test]
fn err_missing_equals() {
    // The doc lists no bare flags; xl's legacy `ioemu` flag is not a key=value.
    assert_eq!(
        parse_vif("ioemu"),
        Err(XlError::MissingEquals("ioemu".into()))
    );
    assert_eq!(
        parse_vif("ioemu").unwrap_err().to_string(),
        "vif: 'ioemu' is not key=value"
    );
}

#[test]
fn err_unknown_key() {
    let e = parse_vif("foo=1").unwrap_err();
    assert_eq!(e, XlError::UnknownKey("foo".into()));
    assert_eq!(e.to_string(), "vif: unknown key 'foo'");
    // Keys are case-sensitive, as in xl.
    assert!(matches!(
        parse_vif("MAC=00:16:3e:00:00:01"),
        Err(XlError::UnknownKey(_))
    ));
}

#[test]
fn err_empty_value() {
    assert_eq!(
        parse_vif("bridge="),
        Err(XlError::EmptyValue("bridge".into()))
    );
    assert_eq!(parse_vif("ip=  "), Err(XlError::EmptyValue("ip".into())));
}

#[test]
fn err_duplicate_key() {
    assert_eq!(
        parse_vif("bridge=a,bridge=b"),
        Err(XlError::DuplicateKey("bridge".into()))
    );
    // An alias counts as the same key.
    assert_eq!(
        parse_vif("netdev=eth0,gatewaydev=eth1"),
        Err(XlError::DuplicateKey("gatewaydev".into()))
    );
}

#[test]
fn err_bad_mac() {
    let e = parse_vif("mac=00:16:3e:zz:00:01").unwrap_err();
    assert_eq!(e.to_string(), "vif: bad mac '00:16:3e:zz:00:01'");
    for bad in [
        "00:16:3e:00:00",
        "00:16:3e:00:00:01:02",
        "00-16-3e-00-00-01",
        "0:16:3e:0:0:1",
        "000:16:3e:00:00:01",
        "00:16:3e:00:00:+1",
        "",
    ] {
        assert_eq!(parse_mac(bad), Err(XlError::BadMac(bad.into())), "{bad}");
    }
}

#[test]
fn err_multicast_mac() {
    assert_eq!(
        parse_mac("01:00:5e:00:00:01"),
        Err(XlError::MulticastMac("01:00:5e:00:00:01".into()))
    );
    assert!(matches!(
        parse_mac("ff:ff:ff:ff:ff:ff"),
        Err(XlError::MulticastMac(_))
    ));
    // Locally administered unicast is fine (the doc's recommended pattern).
    assert!(parse_mac("02:00:00:00:00:01").is_ok());
}

#[test]
fn err_bad_type() {
    assert_eq!(parse_vif("type=pv"), Err(XlError::BadType("pv".into())));
    assert_eq!(parse_vif("type=VIF"), Err(XlError::BadType("VIF".into())));
}

#[test]
fn err_bad_model() {
    assert_eq!(
        parse_vif("model=e1000;rm"),
        Err(XlError::BadModel("e1000;rm".into()))
    );
    assert!(matches!(parse_vif("model=a b"), Err(XlError::BadModel(_))));
}

#[test]
fn err_bad_ifname() {
    let long = "abcdefghijklmnop"; // 16 bytes
    for (key, value) in [
        ("vifname", long),
        ("vifname", "."),
        ("vifname", ".."),
        ("bridge", "xen/br0"),
        ("bridge", "xen br0"),
        ("bridge", "xenbr0:1"),
        ("gatewaydev", "eth\t0"),
    ] {
        let spec = format!("{key}={value}");
        assert_eq!(
            parse_vif(&spec),
            Err(XlError::BadIfname {
                key,
                value: value.into()
            }),
            "{spec}"
        );
    }
    assert!(parse_vif("vifname=abcdefghijklmno").is_ok()); // 15 bytes
}

#[test]
fn err_bad_ip() {
    assert_eq!(
        parse_vif("ip=192.0.2.1 192.0.2.300"),
        Err(XlError::BadIp("192.0.2.300".into()))
    );
    assert!(matches!(
        parse_vif("ip=192.0.2.0/24"),
        Err(XlError::BadIp(_))
    ));
}

#[test]
fn err_bad_rate() {
    let e = parse_vif("rate=10Xb/s").unwrap_err();
    assert_eq!(e.to_string(), "vif: rate '10Xb/s': unknown unit");
    assert_eq!(rate_fault("10Xb/s"), RateFault::UnknownUnit);
    assert_eq!(rate_fault("10mb/s"), RateFault::UnknownUnit);
    assert_eq!(rate_fault("10/s"), RateFault::UnknownUnit);

    for s in [
        "10MB", "MB/s", "", "@20ms", "-1MB/s", "+1MB/s", "1.5MB/s", "10MB/m",
    ] {
        assert_eq!(rate_fault(s), RateFault::Malformed, "{s}");
    }
    assert_eq!(rate_fault("0MB/s"), RateFault::Zero);
    assert_eq!(rate_fault("7b/s"), RateFault::Zero); // 0 bytes after /8
    assert_eq!(rate_fault("1MB/s@0ms"), RateFault::Zero);

    assert_eq!(rate_fault("4294967296B/s"), RateFault::Overflow); // > u32::MAX
    assert_eq!(
        rate_fault("99999999999999999999999B/s"),
        RateFault::Overflow
    );
    // An interval above u32::MAX microseconds.
    assert_eq!(rate_fault("1MB/s@4295s"), RateFault::Overflow);
    // The largest rate fits, but its credit per interval must fit u64 too.
    assert_eq!(rate_fault("4294967295GB/s@5us"), RateFault::Overflow);
    let max = parse_rate("4294967295GB/s@4us").unwrap();
    assert_eq!(max.bytes_per_interval(), 17_179_869_180_000);

    for s in [
        "1MB/s@",
        "1MB/s@20",
        "1MB/s@20m",
        "1MB/s@ms",
        "1MB/s@20ms@1s",
    ] {
        assert_eq!(rate_fault(s), RateFault::BadInterval, "{s}");
    }
}

#[test]
fn err_bad_devid() {
    assert_eq!(parse_vif("devid=x"), Err(XlError::BadDevid("x".into())));
    assert_eq!(parse_vif("devid=-1"), Err(XlError::BadDevid("-1".into())));
    assert!(matches!(
        parse_vif("devid=2147483648"),
        Err(XlError::BadDevid(_))
    ));
    assert_eq!(
        parse_vif("devid=2147483647").unwrap().devid,
        Some(i32::MAX as u32)
    );
}

#[test]
fn err_bad_mtu() {
    for bad in ["67", "65536", "99999999999999999999", "+1500", "jumbo"] {
        assert_eq!(
            parse_vif(&format!("mtu={bad}")),
            Err(XlError::BadMtu(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(parse_vif("mtu=68").unwrap().mtu, Some(68));
    assert_eq!(parse_vif("mtu=65535").unwrap().mtu, Some(65535));
}

#[test]
fn err_syntax() {
    let cases = [
        ("vif = [ 'bridge=a", "unterminated string"),
        ("vif = [ 'bridge=a'", "unterminated list"),
        ("vif = 'bridge=a'", "vif must be a list of strings"),
        ("vif = [ 1 ]", "vif must be a list of strings"),
        ("vif = [ 'a' 'b' ]", "expected ',' or ']' in a list"),
        ("vif 'x'", "expected '=' after a setting name"),
        ("= 1", "expected a setting name"),
        ("vif =", "expected a value"),
        ("name = 'a' 'b'", "expected end of line after a value"),
        (r"vif = [ 'a\q' ]", "unsupported escape in string"),
    ];
    for (cfg, msg) in cases {
        match parse_vif_setting(cfg) {
            Err(XlError::Syntax { line: 1, msg: m }) => assert_eq!(m, msg, "{cfg}"),
            other => panic!("{cfg}: {other:?}"),
        }
    }
    let e = parse_vif_setting("\n\nvif = [").unwrap_err();
    assert_eq!(e.to_string(), "config line 3: unterminated list");
}

#[test]
fn err_element() {
    let cfg = "vif = [ 'bridge=xenbr0',\n  'mac=00:16:3e:zz:00:01' ]";
    let e = parse_vif_setting(cfg).unwrap_err();
    assert_eq!(
        e,
        XlError::Element {
            index: 1,
            line: 2,
            error: Box::new(XlError::BadMac("00:16:3e:zz:00:01".into())),
        }
    );
    assert_eq!(
        e.to_string(),
        "vif[1] at line 2: vif: bad mac '00:16:3e:zz:00:01'"
    );
}
