//! xnetd: the XenAPI server and the host agent in one process. On the first
//! start it "installs" the host: discovers NICs and creates the records.

mod config;

use anyhow::{anyhow, bail, Context, Result};
use std::sync::Arc;
use xnet_api::{Api, Realizer, Role, Users};
use xnet_model::{ApiError, Db, Record};
use xnet_store::{Options, Store};

struct AgentRealizer(Arc<xnet_agent::Agent>);
impl Realizer for AgentRealizer {
    fn realize(&self, host: &str, generation: u64) -> Result<(), ApiError> {
        self.0.realize(host, generation)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = if args.first().map(String::as_str) == Some("user-add") {
        user_add(&args[1..])
    } else {
        config::parse(&args).and_then(run)
    };
    if let Err(e) = r {
        eprintln!("xnetd: {e:#}");
        std::process::exit(2);
    }
}

fn user_add(args: &[String]) -> Result<()> {
    let name = args
        .first()
        .ok_or_else(|| anyhow!("user-add NAME"))?
        .clone();
    if name.is_empty() || name.contains(':') || name.contains('\n') {
        bail!("user name '{name}' may not be empty or contain ':'");
    }
    let (mut role, mut pw, mut dir) = (
        Role::PoolAdmin,
        None,
        std::path::PathBuf::from("/var/lib/xnet"),
    );
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--role" => role = Role::parse(v)?,
            "--password-file" => {
                pw = Some(
                    std::fs::read_to_string(v)?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                )
            }
            "--state-dir" => dir = v.into(),
            _ => bail!("unknown option {a}"),
        }
    }
    let pw = pw.ok_or_else(|| anyhow!("--password-file is required"))?;
    std::fs::create_dir_all(&dir)?;
    let mut users = Users::load(&dir.join("users"))?;
    users.set(&name, &pw, role)?;
    println!("user {name} ({}) saved", role.name());
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// NICs named like the configured prefixes, in natural order (eth2 < eth10).
fn discover_nics(prefixes: &[String]) -> Result<Vec<xnet_model::host::Nic>> {
    let mut rt = xnet_rtnl::Rtnl::open().context("netlink")?;
    let mut links: Vec<_> = rt
        .links()
        .context("listing links")?
        .into_iter()
        .filter(|l| prefixes.iter().any(|p| l.name.starts_with(p.as_str())))
        .filter(|l| l.mac.is_some())
        .collect();
    links.sort_by_key(|l| xnet_model::pif::device_order_key(&l.name));
    Ok(links
        .into_iter()
        .enumerate()
        .map(|(pos, l)| xnet_model::host::Nic {
            device: l.name.clone(),
            mac: xnet_model::helpers::format_mac(l.perm_mac.or(l.mac).unwrap_or_default()),
            position: pos as u32,
            carrier: l.carrier,
            speed_mbps: 0,
            duplex_full: false,
            driver: String::new(),
        })
        .collect())
}

fn first_start(store: &Store<Record>, cfg: &config::Config) -> Result<()> {
    let empty = store.read(|v| v.iter("host").next().is_none());
    if !empty {
        return Ok(());
    }
    let nics = discover_nics(&cfg.nic_prefixes)?;
    if nics.is_empty() {
        eprintln!(
            "xnetd: no NIC named {:?} found; the host starts without PIFs",
            cfg.nic_prefixes
        );
    }
    if let Some(dev) = &cfg.management.device {
        if !nics.iter().any(|n| &n.device == dev) {
            bail!("management device {dev} is not among the NICs found");
        }
    }
    let setup = xnet_model::install::Setup {
        hostname: cfg.hostname.clone().unwrap_or_else(hostname),
        backend: "openvswitch".into(),
        nics,
        management: cfg.management.clone(),
    };
    let r = store.write(|txn| {
        let mut t = xnet_api::tables::TxnTables(txn);
        let mut d = Db::new(&mut t);
        xnet_model::install::install(&mut d, &setup)
    });
    match r {
        Ok((host, _)) => {
            eprintln!(
                "xnetd: installed host {host} with {} NIC(s)",
                setup.nics.len()
            );
            Ok(())
        }
        Err(e) => bail!("first start failed: {e:?}"),
    }
}

fn run(cfg: config::Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("{}", cfg.state_dir.display()))?;
    std::fs::create_dir_all(&cfg.run_dir).with_context(|| format!("{}", cfg.run_dir.display()))?;
    let store = Arc::new(Store::open(
        &cfg.state_dir.join("db"),
        Options {
            volatile_tables: xnet_api::volatile_tables(),
            ..Options::default()
        },
    )?);
    first_start(&store, &cfg)?;

    let users_path = cfg.state_dir.join("users");
    let mut users = Users::load(&users_path)?;
    if !users.contains("root") {
        let pw = match &cfg.root_password {
            Some(p) => p.clone(),
            None => {
                let mut b = [0u8; 12];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
                    .context("random password")?;
                let p: String = b.iter().map(|x| format!("{x:02x}")).collect();
                let path = cfg.state_dir.join("root-password");
                std::fs::write(&path, format!("{p}\n"))?;
                eprintln!("xnetd: generated a password for root in {}", path.display());
                p
            }
        };
        users.set("root", &pw, Role::PoolAdmin)?;
    }

    let mut membership = xnet_api::pool::Membership::load(&cfg.state_dir.join("pool.conf"))?;
    // A member takes its records from the coordinator: the first contact
    // (bounded) before the agent starts, so it knows its host.
    let mut follower = match membership.coordinator() {
        Some(c) => {
            eprintln!("xnetd: a member of the pool of {c}: calls here answer HOST_IS_SLAVE");
            let shared = Arc::new(std::sync::Mutex::new(xnet_api::pool::Membership::load(
                &cfg.state_dir.join("pool.conf"),
            )?));
            let mut f = xnet_api::member::Follower::new(Arc::clone(&store), Arc::clone(&shared))?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let reached = loop {
                match f.step(std::time::Duration::ZERO) {
                    Ok(_) => break true,
                    Err(e) if std::time::Instant::now() >= deadline => {
                        eprintln!("xnetd: the coordinator {c} does not answer ({e}); going on with the records last replicated");
                        break false;
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
                }
            };
            if reached && f.host_ref().is_none() {
                eprintln!("xnetd: ejected from the pool while stopped: a host of its own again");
                leave_pool(&store, &cfg.state_dir.join("pool.conf"))?;
                first_start(&store, &cfg)?;
                None
            } else {
                Some((f, shared))
            }
        }
        None => None,
    };
    if follower.is_none() && membership.coordinator().is_some() {
        membership = xnet_api::pool::Membership::load(&cfg.state_dir.join("pool.conf"))?;
    }
    let host = match &follower {
        Some((f, _)) => f.host_ref(),
        None => store.read(|v| {
            v.iter("pool")
                .next()
                .map(|(_, r)| xnet_model::db::s(r, "master").to_string())
        }),
    };
    let host = host.ok_or_else(|| anyhow!("the store has no record of this host"))?;
    let realizer: Arc<dyn Realizer> = if cfg.agent {
        let agent = xnet_agent::Agent::start(
            Arc::clone(&store),
            host.clone(),
            xnet_agent::Settings {
                ovsdb: cfg.ovsdb.clone(),
                datapath_type: cfg.datapath.clone(),
                resolv_conf: cfg.resolv_conf.clone(),
                nic_prefixes: cfg.nic_prefixes.clone(),
                run_dir: cfg.run_dir.clone(),
                ovs_rundir: cfg.ovs_rundir.clone(),
            },
        )
        .map_err(|e| anyhow!("starting the agent: {e}"))?;
        Arc::new(AgentRealizer(agent))
    } else {
        Arc::new(xnet_api::NoAgent)
    };
    // XAPI restarts on a joined host; xnetd starts over as a member.
    let restart: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {
        use std::os::unix::process::CommandExt;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let e = std::process::Command::new("/proc/self/exe")
            .args(args)
            .exec();
        eprintln!("xnetd: starting over failed: {e}");
        std::process::exit(1);
    });
    let api = if let Some((mut f, shared)) = follower.take() {
        let mut reporter = f.reporter()?;
        let h = host.clone();
        std::thread::Builder::new()
            .name("xnet-report".into())
            .spawn(move || reporter.run(&h))
            .expect("reporter thread");
        let local = Arc::clone(&realizer);
        let h = host.clone();
        let (st, conf, again) = (
            Arc::clone(&store),
            cfg.state_dir.join("pool.conf"),
            Arc::clone(&restart),
        );
        std::thread::Builder::new()
            .name("xnet-follow".into())
            .spawn(move || {
                follow(&mut f, &*local, &h);
                // Ejected: a fresh single host, installed anew at start.
                eprintln!("xnetd: ejected from the pool: starting over as a host of its own");
                match leave_pool(&st, &conf) {
                    Ok(()) => again(),
                    Err(e) => eprintln!("xnetd: leaving the pool: {e}"),
                }
            })
            .expect("follower thread");
        Api::new_member(Arc::clone(&store), users, realizer, shared, Some(restart))
    } else {
        Api::new_coordinator(
            Arc::clone(&store),
            users,
            realizer,
            membership,
            Some(restart),
        )
    };

    // Every listener is bound before any serves: a client that reaches the unix
    // socket can rely on the TCP ports too (TLS setup may first make a certificate).
    let http = match cfg.http_listen {
        Some(addr) => Some(listen(addr).with_context(|| format!("binding {addr}"))?),
        None => None,
    };
    let https = match cfg.listen {
        Some(addr) => {
            let names = vec![
                cfg.hostname.clone().unwrap_or_else(hostname),
                "localhost".into(),
            ];
            let tls = xnet_api::tls::server_config(&cfg.state_dir, &names)?;
            let l = listen(addr).with_context(|| format!("binding {addr}"))?;
            Some((l, tls))
        }
        None => None,
    };
    let sock = cfg.run_dir.join("xapi.sock");
    let _ = std::fs::remove_file(&sock);
    let ul = std::os::unix::net::UnixListener::bind(&sock)
        .with_context(|| format!("{}", sock.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
    let mut threads = vec![];
    {
        let api = Arc::clone(&api);
        threads.push(std::thread::spawn(move || {
            xnet_api::http::serve_unix(api, ul)
        }));
    }
    if let Some(l) = http {
        let api = Arc::clone(&api);
        threads.push(std::thread::spawn(move || {
            xnet_api::http::serve_tcp(api, l, None)
        }));
    }
    if let Some((l, tls)) = https {
        let api = Arc::clone(&api);
        threads.push(std::thread::spawn(move || {
            xnet_api::http::serve_tcp(api, l, Some(tls))
        }));
    }
    eprintln!("xnetd: serving on {}", sock.display());
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A TCP listener on `addr`, which may be an address not on any device yet
/// (IP_FREEBIND): the management address appears once the agent has
/// realized the management bridge, after the listeners are up.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // sockaddr structs are fully initialized and their sizes passed.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::IP_FREEBIND] {
            let level = if opt == libc::SO_REUSEADDR {
                libc::SOL_SOCKET
            } else {
                libc::IPPROTO_IP
            };
            let p = &one as *const libc::c_int as *const libc::c_void;
            let n = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::setsockopt(raw, level, opt, p, n) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let r = match addr {
            std::net::SocketAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                libc::bind(
                    raw,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of_val(&sa) as libc::socklen_t,
                )
            }
            std::net::SocketAddr::V6(a) => {
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                libc::bind(
                    raw,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of_val(&sa) as libc::socklen_t,
                )
            }
        };
        if r < 0 || libc::listen(raw, 128) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::net::TcpListener::from(fd))
    }
}

/// A member's loop: the coordinator's changes in, the agent's outcome back.
/// A change a call on the coordinator waits for is reported as soon as the
/// agent realized it; others within a second, so fifteen members do not
/// all answer every change at once. Returns when this host has left the
/// pool's records (pool.eject).
fn follow(f: &mut xnet_api::member::Follower, agent: &dyn Realizer, host: &str) {
    use std::time::{Duration, Instant};
    const LAZY: Duration = Duration::from_secs(1);
    let outcome = |local: u64| match agent.realize(host, local) {
        Ok(()) => String::new(),
        Err(e) => e.to_description().join(" "),
    };
    // Not yet reported: (local generation, coordinator generation, due).
    let mut pending = Some((0, f.since(), Instant::now()));
    loop {
        if let Some((local, generation, due)) = pending {
            if Instant::now() >= due {
                match f.report(host, generation, &outcome(local)) {
                    Ok(()) => pending = None,
                    Err(e) => {
                        eprintln!("xnetd: reporting to the coordinator: {e}");
                        pending = Some((local, generation, Instant::now() + LAZY));
                    }
                }
            }
        }
        let wait = match pending {
            Some((_, _, due)) => due.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(5),
        };
        match f.step(wait) {
            Ok(Some(_)) if f.host_ref().is_none() => return,
            Ok(Some(s)) => {
                let due = match pending {
                    _ if s.awaited => Instant::now(),
                    Some((_, _, due)) => due,
                    None => Instant::now() + LAZY,
                };
                pending = Some((s.local, s.generation, due));
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("xnetd: following the coordinator: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Leaves the pool for good (ejected): `pool.conf` says master again and
/// the coordinator's records go, so the next start installs a fresh host.
fn leave_pool(store: &Store<Record>, conf: &std::path::Path) -> Result<()> {
    xnet_api::pool::Membership::load(conf)?.leave()?;
    store
        .write(|t| {
            for c in xnet_model::schema::CLASSES {
                let refs: Vec<String> = t.iter(c.name).map(|(r, _)| r.to_string()).collect();
                for r in refs {
                    t.delete(c.name, &r);
                }
            }
            Ok::<_, ()>(())
        })
        .map_err(|e| anyhow!("clearing the pool's records: {e:?}"))?;
    Ok(())
}
