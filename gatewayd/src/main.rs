//! The `gatewayd` command: run the daemon, validate profiles, print the schema, hash passwords,
//! and the operator commands that read the running daemon through its admin endpoint.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gatewayd::observe::operator::View;
use gatewayd::{daemon, profile, sip};

#[derive(Parser)]
#[command(name = "gatewayd", version, about = "One hardened gateway between browser softphones and an internal SIP server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, then run the gateway on a profile.
    Run {
        /// The profile (TOML).
        #[arg(long, short, env = "GATEWAYD_PROFILE", default_value = "/etc/gatewayd/profile.toml")]
        profile: PathBuf,
        /// Where generated state lives (overrides $STATE_DIRECTORY and site.state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Check profiles; prints `ok: PATH` or `PATH:LINE:COL: key: problem` lines. Exit 1 if any is invalid.
    Validate {
        #[arg(required = true)]
        profiles: Vec<PathBuf>,
        /// `text` (the lines above) or `json`: one object with each profile's path, validity,
        /// SHA-256 and problems (line, column, key, message), for editors and CI tools.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Print the JSON Schema of the profile (or its Markdown reference).
    Schema {
        /// Print the profile reference in Markdown instead.
        #[arg(long)]
        markdown: bool,
    },
    /// The nftables ruleset a profile gives.
    Firewall {
        #[command(subcommand)]
        command: FirewallCommand,
    },
    /// The appliance's operating-system settings.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Active bans, through the running daemon's admin endpoint.
    Bans {
        #[command(subcommand)]
        command: BansCommand,
        /// The running daemon's profile (its observe.admin is used).
        #[arg(long, short, env = "GATEWAYD_PROFILE", default_value = "/etc/gatewayd/profile.toml", global = true)]
        profile: PathBuf,
        /// The admin endpoint, instead of the profile's observe.admin.
        #[arg(long, global = true)]
        admin: Option<String>,
    },
    /// High availability, for keepalived's scripts.
    Ha {
        #[command(subcommand)]
        command: HaCommand,
        /// The running daemon's profile (its observe.admin is used).
        #[arg(long, short, env = "GATEWAYD_PROFILE", default_value = "/etc/gatewayd/profile.toml", global = true)]
        profile: PathBuf,
        /// The admin endpoint, instead of the profile's observe.admin.
        #[arg(long, global = true)]
        admin: Option<String>,
    },
    /// The running daemon at a glance: profile checksum, uptime, listeners, counts, upstream
    /// health, certificate expiry.
    Status(Operator),
    /// Registered agents (DN, contact, user agent, since) and their last authentication failures.
    Agents(Operator),
    /// Calls in progress with each leg's quality so far.
    Calls(Operator),
    /// Upstream SIP servers and their health.
    Upstream(Operator),
    /// Read a password from stdin and print the digest HA1 lines for the profile.
    HashPassword {
        /// The DN (digest user name).
        #[arg(long)]
        user: String,
        /// The digest realm (site.realm, or site.sip_domain when no realm is set).
        #[arg(long)]
        realm: String,
    },
}

/// How an operator command reaches the running daemon, and how it prints.
#[derive(clap::Args)]
struct Operator {
    /// The running daemon's profile (its observe.admin is used).
    #[arg(long, short, env = "GATEWAYD_PROFILE", default_value = "/etc/gatewayd/profile.toml")]
    profile: PathBuf,
    /// The admin endpoint, instead of the profile's observe.admin.
    #[arg(long)]
    admin: Option<String>,
    /// Print the admin endpoint's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// Print the ruleset as an nft script, without applying it (`nft -c -f -` accepts it).
    Show { profile: PathBuf },
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Write networkd, timesyncd, journal-upload, hostname, resolv.conf and SSH files from the
    /// profile's [system] and [management] into a directory (the image applies them at boot).
    Render {
        #[arg(long, short)]
        profile: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BansCommand {
    /// List active bans.
    List,
    /// Lift the ban of an address.
    Remove { address: std::net::IpAddr },
    /// Ban an address (for SECONDS, else the first rule's ban time); an HA peer bans it too.
    Add {
        address: std::net::IpAddr,
        #[arg(long)]
        seconds: Option<u64>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ValidateFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum HaCommand {
    /// This node lost the virtual addresses: end the calls it holds (keepalived notify_backup/fault).
    Standby,
    /// Exit 0 when the daemon answers /health within a second (keepalived's track script).
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { profiles, format } => validate(&profiles, format),
        Command::Schema { markdown } => {
            if markdown {
                print!("{}", profile::reference_markdown());
            } else {
                print!("{}", profile::schema_json());
            }
            ExitCode::SUCCESS
        }
        Command::HashPassword { user, realm } => hash_password(&user, &realm),
        Command::Firewall { command: FirewallCommand::Show { profile } } => gatewayd::firewall::cli_show(&profile),
        Command::Bans { command, profile, admin } => bans(command, &profile, admin),
        Command::Ha { command, profile, admin } => ha(command, &profile, admin),
        Command::Status(o) => operator(View::Status, o),
        Command::Agents(o) => operator(View::Agents, o),
        Command::Calls(o) => operator(View::Calls, o),
        Command::Upstream(o) => operator(View::Upstream, o),
        Command::System { command: SystemCommand::Render { profile, out } } => gatewayd::system::render::cli_render(&profile, &out),
        Command::Run { profile, state_dir } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("gatewayd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(daemon::run(daemon::RunOptions { profile, state_dir })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // The whole chain: "cannot start TURN: cannot listen on ...: Address in use".
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(paths: &[PathBuf], format: ValidateFormat) -> ExitCode {
    let mut ok = true;
    let mut reports = Vec::new();
    for path in paths {
        let result = profile::load(path);
        ok &= result.is_ok();
        match format {
            ValidateFormat::Text => match &result {
                Ok(_) => println!("ok: {}", path.display()),
                Err(diagnostics) => println!("{diagnostics}"),
            },
            ValidateFormat::Json => reports.push(validation_report(path, &result)),
        }
    }
    if let ValidateFormat::Json = format {
        println!("{}", serde_json::json!({ "valid": ok, "profiles": reports }));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One profile's entry in `validate --format json`.
fn validation_report(path: &std::path::Path, result: &Result<profile::LoadedProfile, profile::Diagnostics>) -> serde_json::Value {
    match result {
        Ok(loaded) => serde_json::json!({
            "path": path.display().to_string(), "valid": true, "sha256": loaded.sha256,
            "overrides": loaded.overrides, "problems": [],
        }),
        Err(diagnostics) => serde_json::json!({
            "path": path.display().to_string(), "valid": false,
            "problems": diagnostics.0.iter().map(|d| serde_json::json!({
                "file": d.path.display().to_string(),
                "line": d.position.map(|(line, _)| line),
                "column": d.position.map(|(_, col)| col),
                "key": d.key,
                "message": d.message,
            })).collect::<Vec<_>>(),
        }),
    }
}

fn hash_password(user: &str, realm: &str) -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut password) {
        eprintln!("gatewayd: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("gatewayd: empty password on stdin");
        return ExitCode::FAILURE;
    }
    println!("ha1_md5 = \"{}\"", sip::digest::ha1(sip::digest::Algorithm::Md5, user, realm, password));
    println!("ha1_sha256 = \"{}\"", sip::digest::ha1(sip::digest::Algorithm::Sha256, user, realm, password));
    ExitCode::SUCCESS
}

/// `--admin`, else the profile's `observe.admin`; a profile that does not load is reported.
fn admin_address(profile_path: &std::path::Path, admin: Option<String>) -> Option<String> {
    match admin {
        Some(a) => Some(a),
        None => match profile::load(profile_path) {
            Ok(p) => Some(p.profile.observe.admin.to_string()),
            Err(d) => {
                eprintln!("{d}");
                None
            }
        },
    }
}

fn operator(view: View, o: Operator) -> ExitCode {
    match admin_address(&o.profile, o.admin) {
        Some(admin) => gatewayd::observe::operator::run(view, &admin, o.json),
        None => ExitCode::FAILURE,
    }
}

fn ha(command: HaCommand, profile_path: &std::path::Path, admin: Option<String>) -> ExitCode {
    let Some(admin) = admin_address(profile_path, admin) else { return ExitCode::FAILURE };
    let timeout = Some(std::time::Duration::from_millis(900));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(timeout).build().into();
    match command {
        HaCommand::Check => match agent.get(format!("http://{admin}/health")).call() {
            Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        },
        HaCommand::Standby => match agent.post(format!("http://{admin}/ha/standby")).send_empty() {
            Ok(mut r) if r.status().is_success() => {
                println!("{}", r.body_mut().read_to_string().unwrap_or_default().trim_end());
                ExitCode::SUCCESS
            }
            Ok(mut r) => {
                eprintln!("gatewayd: standby refused: {}", r.body_mut().read_to_string().unwrap_or_default().trim_end());
                ExitCode::FAILURE
            }
            // A dead daemon holds no calls: nothing to end.
            Err(e) => {
                eprintln!("gatewayd: cannot reach the admin endpoint at {admin}: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn bans(command: BansCommand, profile_path: &std::path::Path, admin: Option<String>) -> ExitCode {
    let Some(admin) = admin_address(profile_path, admin) else { return ExitCode::FAILURE };
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let result = match command {
        BansCommand::List => agent.get(format!("http://{admin}/bans")).call(),
        BansCommand::Remove { address } => agent.delete(format!("http://{admin}/bans/{address}")).call(),
        BansCommand::Add { address, seconds: Some(s) } => agent.post(format!("http://{admin}/bans/{address}?seconds={s}")).send_empty(),
        BansCommand::Add { address, seconds: None } => agent.post(format!("http://{admin}/bans/{address}")).send_empty(),
    };
    match result {
        Ok(mut response) => {
            let ok = response.status().is_success();
            let body = response.body_mut().read_to_string().unwrap_or_default();
            if ok {
                print!("{body}");
                if !body.ends_with('\n') {
                    println!();
                }
                ExitCode::SUCCESS
            } else {
                eprint!("gatewayd: {body}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("gatewayd: cannot reach the admin endpoint at {admin}: {e}");
            ExitCode::FAILURE
        }
    }
}
