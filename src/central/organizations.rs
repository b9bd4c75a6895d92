//! Organizations: the tree that scopes devices, users and tokens inside an application.

use super::client::{Call, Client};
use super::error::Error;
use super::models::Organization;
use super::pager::{ListOptions, Pager};
use reqwest::Method;

impl Client {
    /// Lists the organizations the caller can see (`Organizations_List`).
    pub fn list_organizations(&self) -> Pager<Organization> {
        Pager::new(
            self,
            "Organizations_List",
            &["organizations"],
            &ListOptions::default(),
            None,
        )
    }

    /// Gets one organization (`Organizations_Get`).
    pub async fn get_organization(&self, id: &str) -> Result<Organization, Error> {
        let op = "Organizations_Get";
        let url = self.url(op, &["organizations", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Creates (or replaces) an organization (`Organizations_Create`).
    ///
    /// ```no_run
    /// # async fn demo(client: iotc::central::Client) -> Result<(), iotc::central::Error> {
    /// use iotc::central::models::Organization;
    /// let org = Organization { display_name: Some("Seattle".into()), ..Default::default() };
    /// client.create_organization("seattle", &org).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_organization(
        &self,
        id: &str,
        org: &Organization,
    ) -> Result<Organization, Error> {
        let op = "Organizations_Create";
        let url = self.url(op, &["organizations", id], false)?;
        self.json(Call::new(op, Method::PUT, url).json(org)?).await
    }

    /// Updates an organization with a JSON merge patch (`Organizations_Update`).
    pub async fn update_organization(
        &self,
        id: &str,
        patch: &serde_json::Value,
    ) -> Result<Organization, Error> {
        let op = "Organizations_Update";
        let url = self.url(op, &["organizations", id], false)?;
        self.json(Call::new(op, Method::PATCH, url).merge_patch(patch)?)
            .await
    }

    /// Deletes an organization (`Organizations_Remove`).
    pub async fn delete_organization(&self, id: &str) -> Result<(), Error> {
        let op = "Organizations_Remove";
        let url = self.url(op, &["organizations", id], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }
}
