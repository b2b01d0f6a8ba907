//! Mirroring auth effects as RPCs, idempotently.

use etcd_standby_client::{ClientError, EtcdError, authpb};
use etcd_standby_model::{Effect, Password};

use crate::error::{Result, SinkError};
use crate::sink::{Sink, lock};

/// The root role / user name.
const ROOT: &str = "root";

fn is(e: &ClientError, which: &[EtcdError]) -> bool {
    e.etcd_error().is_some_and(|x| which.contains(&x))
}

fn plain(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl Sink {
    /// The user the replicator acts as on the standby, if known.
    pub(crate) fn self_user(&self) -> Option<&str> {
        self.cfg
            .standby_user
            .as_deref()
            .or(self.cfg.client.user.as_ref().map(|(u, _)| u.as_str()))
    }

    fn lockout(&self, index: u64, user: &str, what: &str) -> SinkError {
        SinkError::SelfLockout {
            index,
            message: format!(
                "the primary {what} user {user:?}, which is the user the replicator uses on the \
                 standby; mirroring it could lock the replicator out. Use a dedicated replicator \
                 user whose name does not exist on the primary"
            ),
        }
    }

    fn tolerated(&self, index: u64, what: &str, e: &ClientError) {
        lock(&self.counters).stats.auth_tolerated += 1;
        tracing::info!(index, what, reason = %e.message().unwrap_or_default(), "auth change already in effect on the standby");
    }

    fn auth_err(index: u64, what: String, source: ClientError) -> SinkError {
        if source.is_unavailable() || source.is_timeout() {
            SinkError::Unavailable { index, source }
        } else {
            SinkError::Auth {
                index,
                what,
                source,
            }
        }
    }

    /// Sets a user's password as the primary stored it.
    async fn set_password(&self, index: u64, name: &str, password: &Password) -> Result<()> {
        let what = || format!("change password of user {name:?}");
        let r = match password {
            Password::Hashed(h) => {
                if self.is_v3_4() {
                    return Err(SinkError::HashUnsupported {
                        index,
                        user: name.to_owned(),
                        standby_version: self.standby_version.clone(),
                    });
                }
                self.client.user_change_password_hashed(name, h).await
            }
            Password::Plain(p) => self.client.user_change_password(name, &plain(p)).await,
            Password::None => return Ok(()),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => {
                self.tolerated(index, "change password", &e);
                Ok(())
            }
            Err(e) => Err(Self::auth_err(index, what(), e)),
        }
    }

    /// Adds a user with its password; an existing user gets the password.
    pub(crate) async fn add_user(
        &self,
        index: u64,
        name: &str,
        password: &Password,
        no_password: bool,
    ) -> Result<()> {
        let r = match password {
            Password::Hashed(h) => {
                if self.is_v3_4() {
                    return Err(SinkError::HashUnsupported {
                        index,
                        user: name.to_owned(),
                        standby_version: self.standby_version.clone(),
                    });
                }
                self.client.user_add_hashed(name, h).await
            }
            Password::Plain(p) => self.client.user_add(name, &plain(p), false).await,
            Password::None => self.client.user_add(name, "", no_password).await,
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if is(&e, &[EtcdError::UserAlreadyExists]) => {
                self.tolerated(index, "add user", &e);
                self.set_password(index, name, password).await
            }
            Err(e) => Err(Self::auth_err(index, format!("add user {name:?}"), e)),
        }
    }

    /// Makes sure the replicator's own user exists with the root role
    /// before auth gets enabled on the standby.
    pub(crate) async fn ensure_self_root(&self, index: u64) -> Result<()> {
        let Some(me) = self.self_user().map(str::to_owned) else {
            return Err(SinkError::SelfLockout {
                index,
                message:
                    "the primary enabled auth, and mirroring it would lock the replicator out \
                          of the standby: configure a dedicated standby user with the root role \
                          (ClientConfig.user, or SinkConfig.standby_user with a client certificate \
                          whose CN is that user)"
                        .into(),
            });
        };
        let roles = match self.client.user_get(&me).await {
            Ok(r) => Some(r.roles),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(Self::auth_err(index, format!("get user {me:?}"), e)),
        };
        let roles = match roles {
            Some(r) => r,
            None => {
                let Some((_, pw)) = self.cfg.client.user.as_ref() else {
                    return Err(SinkError::SelfLockout {
                        index,
                        message: format!(
                            "the primary enabled auth but the replicator's user {me:?} does not \
                             exist on the standby (create it with the root role first)"
                        ),
                    });
                };
                self.client
                    .user_add(&me, pw, false)
                    .await
                    .map_err(|e| Self::auth_err(index, format!("add replicator user {me:?}"), e))?;
                tracing::info!(user = %me, "created the replicator's user on the standby");
                Vec::new()
            }
        };
        if !roles.iter().any(|r| r == ROOT) {
            self.client
                .user_grant_role(&me, ROOT)
                .await
                .map_err(|e| Self::auth_err(index, format!("grant root to {me:?}"), e))?;
        }
        Ok(())
    }

    /// Applies one auth effect idempotently.
    pub(crate) async fn apply_auth(&self, index: u64, e: &Effect) -> Result<()> {
        lock(&self.counters).stats.auth_rpcs += 1;
        let me = self.self_user().map(str::to_owned);
        let mine = |n: &str| me.as_deref() == Some(n);
        match e {
            Effect::AuthEnable => {
                self.ensure_self_root(index).await?;
                self.client
                    .auth_enable()
                    .await
                    .map_err(|e| Self::auth_err(index, "enable auth".into(), e))?;
                Ok(())
            }
            Effect::AuthDisable => match self.client.auth_disable().await {
                Ok(_) => Ok(()),
                Err(e) if is(&e, &[EtcdError::AuthNotEnabled]) => Ok(()),
                Err(e) => Err(Self::auth_err(index, "disable auth".into(), e)),
            },
            Effect::UserAdd {
                name,
                password,
                no_password,
            } => {
                if mine(name) {
                    return Err(self.lockout(index, name, "added"));
                }
                self.add_user(index, name, password, *no_password).await
            }
            Effect::UserDelete { name } => {
                if mine(name) {
                    return Err(self.lockout(index, name, "deleted"));
                }
                match self.client.user_delete(name).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => {
                        self.tolerated(index, "delete user", &e);
                        Ok(())
                    }
                    Err(e) => Err(Self::auth_err(index, format!("delete user {name:?}"), e)),
                }
            }
            Effect::UserChangePassword { name, password } => {
                if mine(name) {
                    return Err(self.lockout(index, name, "changed the password of"));
                }
                self.set_password(index, name, password).await
            }
            Effect::UserGrantRole { user, role } => {
                match self.client.user_grant_role(user, role).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => {
                        self.tolerated(index, "grant role", &e);
                        Ok(())
                    }
                    Err(e) => Err(Self::auth_err(
                        index,
                        format!("grant role {role:?} to {user:?}"),
                        e,
                    )),
                }
            }
            Effect::UserRevokeRole { user, role } => {
                if mine(user) && role == ROOT {
                    return Err(self.lockout(index, user, "revoked root from"));
                }
                match self.client.user_revoke_role(user, role).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() || is(&e, &[EtcdError::RoleNotGranted]) => {
                        self.tolerated(index, "revoke role", &e);
                        Ok(())
                    }
                    Err(e) => Err(Self::auth_err(
                        index,
                        format!("revoke role {role:?} from {user:?}"),
                        e,
                    )),
                }
            }
            Effect::RoleAdd { name } => match self.client.role_add(name).await {
                Ok(_) => Ok(()),
                Err(e) if is(&e, &[EtcdError::RoleAlreadyExists]) => {
                    self.tolerated(index, "add role", &e);
                    Ok(())
                }
                Err(e) => Err(Self::auth_err(index, format!("add role {name:?}"), e)),
            },
            Effect::RoleDelete { name } => match self.client.role_delete(name).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => {
                    self.tolerated(index, "delete role", &e);
                    Ok(())
                }
                Err(e) => Err(Self::auth_err(index, format!("delete role {name:?}"), e)),
            },
            Effect::RoleGrantPermission { role, perm } => {
                let (key, range_end) = self.cfg.keys.map_range(&perm.key, &perm.range_end);
                let p = authpb::Permission {
                    perm_type: perm.perm_type.as_i32(),
                    key,
                    range_end,
                };
                match self.client.role_grant_permission(role, p).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => {
                        self.tolerated(index, "grant permission", &e);
                        Ok(())
                    }
                    Err(e) => Err(Self::auth_err(
                        index,
                        format!("grant a permission to role {role:?}"),
                        e,
                    )),
                }
            }
            Effect::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let (key, range_end) = self.cfg.keys.map_range(key, range_end);
                match self
                    .client
                    .role_revoke_permission(role, key, range_end)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() || is(&e, &[EtcdError::PermissionNotGranted]) => {
                        self.tolerated(index, "revoke permission", &e);
                        Ok(())
                    }
                    Err(e) => Err(Self::auth_err(
                        index,
                        format!("revoke a permission from role {role:?}"),
                        e,
                    )),
                }
            }
            _ => Ok(()),
        }
    }
}
