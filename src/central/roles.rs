//! Roles: read-only; their ids are what users and API tokens are granted.

use super::client::{Call, Client};
use super::error::Error;
use super::models::Role;
use super::pager::{ListOptions, Pager};
use reqwest::Method;

impl Client {
    /// Lists the roles (`Roles_List`).
    pub fn list_roles(&self) -> Pager<Role> {
        Pager::new(
            self,
            "Roles_List",
            &["roles"],
            &ListOptions::default(),
            None,
        )
    }

    /// Gets one role (`Roles_Get`).
    pub async fn get_role(&self, id: &str) -> Result<Role, Error> {
        let op = "Roles_Get";
        let url = self.url(op, &["roles", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }
}
