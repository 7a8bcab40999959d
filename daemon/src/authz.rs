//! Who may do what over the control socket (R22).
//!
//! The operator is the peer's Unix user as the kernel reports it (SO_PEERCRED), never a
//! name the client claims, and Unix groups decide what that user may do:
//! - root (uid 0) and members of [`ADMIN_GROUP`] are [`Permission::Admin`]: everything,
//!   including restore, reload and maintenance;
//! - members of [`OPERATOR_GROUP`] are [`Permission::Operator`]: read, isolate, trigger;
//! - everyone else is [`Permission::None`] and is refused.
//!
//! A user's groups are its primary group, its supplementary groups from the group database
//! (`getgrouplist`), and the peer process's own gid (so `sg sekisho …` works). Any lookup
//! that fails counts as "not a member": errors only ever take permission away.

use std::ffi::CString;

use nix::unistd::Gid;
use nix::unistd::Group;
use nix::unistd::Uid;
use nix::unistd::User;

/// Members may read, isolate and trigger.
pub const OPERATOR_GROUP: &str = "sekisho";
/// Members may also restore, reload and schedule maintenance.
pub const ADMIN_GROUP: &str = "sekisho-admin";

/// What a user may do; each level includes the ones below it (compare with `>=`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Refused.
    None,
    /// Read, isolate, trigger.
    Operator,
    /// Everything.
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Operator => "operator",
            Permission::Admin => "admin",
        }
    }

    /// Whether this permission covers what `needed` requires.
    pub fn allows(self, needed: Permission) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The permission of the peer `uid`/`gid` (from SO_PEERCRED), looked up in the user and
/// group databases.
pub fn permission_of(uid: u32, gid: u32) -> Permission {
    permission_with(uid, gid, OPERATOR_GROUP, ADMIN_GROUP)
}

/// [`permission_of`] with other group names, so that tests need not touch the real groups.
fn permission_with(uid: u32, gid: u32, operator_group: &str, admin_group: &str) -> Permission {
    if uid == 0 {
        return Permission::Admin;
    }
    let names: Vec<String> = group_ids(uid, gid)
        .into_iter()
        .filter_map(|gid| match Group::from_gid(gid) {
            Ok(Some(group)) => Some(group.name),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(gid = gid.as_raw(), %err, "cannot look up group; treated as no membership");
                None
            }
        })
        .collect();
    from_groups(uid, &names, operator_group, admin_group)
}

/// The peer's gid, the user's primary gid and its supplementary gids, without repeats.
fn group_ids(uid: u32, gid: u32) -> Vec<Gid> {
    let mut gids = vec![Gid::from_raw(gid)];
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => {
            gids.push(user.gid);
            match CString::new(user.name.clone()) {
                Ok(name) => match nix::unistd::getgrouplist(&name, user.gid) {
                    Ok(list) => gids.extend(list),
                    Err(err) => {
                        tracing::warn!(uid, user = %user.name, %err, "cannot list the user's groups; only the primary group counts");
                    }
                },
                Err(_) => {
                    tracing::warn!(uid, user = %user.name, "user name contains NUL; only the primary group counts");
                }
            }
        }
        Ok(None) => {
            tracing::debug!(uid, "no user database entry; only the peer's gid counts");
        }
        Err(err) => {
            tracing::warn!(uid, %err, "cannot look up user; only the peer's gid counts");
        }
    }
    gids.sort_by_key(|gid| gid.as_raw());
    gids.dedup();
    gids
}

/// The permission of `uid` given the names of all its groups.
pub fn permission_from_groups(uid: u32, group_names: &[String]) -> Permission {
    from_groups(uid, group_names, OPERATOR_GROUP, ADMIN_GROUP)
}

fn from_groups(
    uid: u32,
    group_names: &[String],
    operator_group: &str,
    admin_group: &str,
) -> Permission {
    let member = |group: &str| group_names.iter().any(|name| name == group);
    if uid == 0 || member(admin_group) {
        Permission::Admin
    } else if member(operator_group) {
        Permission::Operator
    } else {
        Permission::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn groups_decide() {
        assert_eq!(permission_from_groups(1000, &[]), Permission::None);
        assert_eq!(
            permission_from_groups(1000, &names(&["users", "wheel"])),
            Permission::None
        );
        assert_eq!(
            permission_from_groups(1000, &names(&["users", "sekisho"])),
            Permission::Operator
        );
        assert_eq!(
            permission_from_groups(1000, &names(&["sekisho-admin"])),
            Permission::Admin
        );
        assert_eq!(
            permission_from_groups(1000, &names(&["sekisho", "sekisho-admin"])),
            Permission::Admin
        );
        // Exact names only.
        assert_eq!(
            permission_from_groups(1000, &names(&["Sekisho", "sekisho2", "sekisho-admins"])),
            Permission::None
        );
        assert_eq!(permission_from_groups(0, &[]), Permission::Admin);
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Permission::Admin.allows(Permission::Operator));
        assert!(Permission::Operator.allows(Permission::Operator));
        assert!(!Permission::Operator.allows(Permission::Admin));
        assert!(!Permission::None.allows(Permission::Operator));
        assert_eq!(
            serde_json::to_string(&Permission::Admin).expect("json"),
            "\"admin\""
        );
    }

    #[test]
    fn root_is_admin() {
        assert_eq!(permission_of(0, 0), Permission::Admin);
    }

    /// Users and groups created for one test, deleted when it ends, pass or fail.
    #[derive(Default)]
    struct Accounts {
        users: Vec<String>,
        groups: Vec<String>,
    }

    impl Accounts {
        fn run(program: &str, args: &[&str]) {
            let status = Command::new(program)
                .args(args)
                .status()
                .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
            assert!(status.success(), "{program} {args:?} failed: {status}");
        }

        fn group(&mut self, name: &str) -> u32 {
            Accounts::run("groupadd", &[name]);
            self.groups.push(name.to_owned());
            Group::from_name(name)
                .expect("look up group")
                .unwrap_or_else(|| panic!("group {name} missing after groupadd"))
                .gid
                .as_raw()
        }

        /// A user with primary group `primary` and supplementary `extra`; returns its uid.
        fn user(&mut self, name: &str, primary: &str, extra: &[&str]) -> u32 {
            let mut args = vec!["-M", "-N", "-s", "/usr/sbin/nologin", "-g", primary];
            let extra = extra.join(",");
            if !extra.is_empty() {
                args.extend(["-G", &extra]);
            }
            args.push(name);
            Accounts::run("useradd", &args);
            self.users.push(name.to_owned());
            User::from_name(name)
                .expect("look up user")
                .unwrap_or_else(|| panic!("user {name} missing after useradd"))
                .uid
                .as_raw()
        }
    }

    impl Drop for Accounts {
        fn drop(&mut self) {
            for user in &self.users {
                let _ = Command::new("userdel").arg(user).status();
            }
            for group in self.groups.iter().rev() {
                let _ = Command::new("groupdel").arg(group).status();
            }
        }
    }

    /// Real accounts in the real databases; the operator and admin groups get unique names
    /// so that the host's own `sekisho` groups are never touched.
    #[test]
    fn permission_of_reads_the_group_database() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: creating users needs root");
            return;
        }
        let tag = format!("skt{}", std::process::id());
        let (op, admin, plain) = (format!("{tag}o"), format!("{tag}a"), format!("{tag}p"));
        let mut accounts = Accounts::default();
        let op_gid = accounts.group(&op);
        let admin_gid = accounts.group(&admin);
        let plain_gid = accounts.group(&plain);
        let operator = accounts.user(&format!("{tag}uo"), &plain, &[&op]);
        let administrator = accounts.user(&format!("{tag}ua"), &plain, &[&admin]);
        let both = accounts.user(&format!("{tag}ub"), &plain, &[&op, &admin]);
        let primary = accounts.user(&format!("{tag}up"), &op, &[]);
        let nobody = accounts.user(&format!("{tag}un"), &plain, &[]);

        let of = |uid, gid| permission_with(uid, gid, &op, &admin);
        assert_eq!(of(operator, plain_gid), Permission::Operator);
        assert_eq!(of(administrator, plain_gid), Permission::Admin);
        assert_eq!(of(both, plain_gid), Permission::Admin);
        // The primary group from the user database counts even when the peer runs with
        // another gid.
        assert_eq!(of(primary, plain_gid), Permission::Operator);
        assert_eq!(of(nobody, plain_gid), Permission::None);
        // The peer's own gid counts (`sg`, setgid programs).
        assert_eq!(of(nobody, op_gid), Permission::Operator);
        assert_eq!(of(nobody, admin_gid), Permission::Admin);
        // A uid without a user entry has only the peer's gid.
        assert_eq!(of(3_999_999_999, plain_gid), Permission::None);
        assert_eq!(of(3_999_999_999, op_gid), Permission::Operator);
        assert_eq!(of(0, plain_gid), Permission::Admin);
        // Through the real entry point: fresh users are in neither real group.
        assert_eq!(permission_of(nobody, plain_gid), Permission::None);
        assert_eq!(permission_of(operator, op_gid), Permission::None);
    }
}
