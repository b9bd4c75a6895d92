//! Device groups and the devices they select (which `az iot central` cannot list).

use super::client::{Call, Client};
use super::error::Error;
use super::models::{Device, DeviceGroup};
use super::pager::{Accepts, ListOptions, Pager};
use reqwest::Method;

impl Client {
    /// Lists the device groups (`DeviceGroups_List`).
    pub fn list_device_groups(&self, options: &ListOptions) -> Pager<DeviceGroup> {
        Pager::new(
            self,
            "DeviceGroups_List",
            &["deviceGroups"],
            options,
            Some(Accepts::All),
        )
    }

    /// Gets one device group (`DeviceGroups_Get`).
    pub async fn get_device_group(&self, id: &str) -> Result<DeviceGroup, Error> {
        let op = "DeviceGroups_Get";
        let url = self.url(op, &["deviceGroups", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Creates (or replaces) a device group (`DeviceGroups_Create`).
    ///
    /// ```no_run
    /// # async fn demo(client: iotc::central::Client) -> Result<(), iotc::central::Error> {
    /// use iotc::central::models::DeviceGroup;
    /// let group = DeviceGroup {
    ///     display_name: "Thermostats".into(),
    ///     filter: "SELECT * FROM devices WHERE $template = \"dtmi:contoso:Thermostat;1\"".into(),
    ///     ..Default::default()
    /// };
    /// client.create_device_group("thermostats", &group).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_device_group(
        &self,
        id: &str,
        group: &DeviceGroup,
    ) -> Result<DeviceGroup, Error> {
        let op = "DeviceGroups_Create";
        let url = self.url(op, &["deviceGroups", id], false)?;
        self.json(Call::new(op, Method::PUT, url).json(group)?)
            .await
    }

    /// Updates a device group with a JSON merge patch (`DeviceGroups_Update`).
    pub async fn update_device_group(
        &self,
        id: &str,
        patch: &serde_json::Value,
    ) -> Result<DeviceGroup, Error> {
        let op = "DeviceGroups_Update";
        let url = self.url(op, &["deviceGroups", id], false)?;
        self.json(Call::new(op, Method::PATCH, url).merge_patch(patch)?)
            .await
    }

    /// Deletes a device group (`DeviceGroups_Remove`).
    pub async fn delete_device_group(&self, id: &str) -> Result<(), Error> {
        let op = "DeviceGroups_Remove";
        let url = self.url(op, &["deviceGroups", id], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }

    /// Lists the devices of a device group (`DeviceGroups_GetDevices`); `options` may set
    /// `max_page_size` only.
    pub fn list_device_group_devices(&self, id: &str, options: &ListOptions) -> Pager<Device> {
        Pager::new(
            self,
            "DeviceGroups_GetDevices",
            &["deviceGroups", id, "devices"],
            options,
            Some(Accepts::PageSize),
        )
    }
}
