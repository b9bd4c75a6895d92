//! Device templates: listed and read so that devices can name one; publishing (create) and
//! removal are here too, for setting up an application or the emulator from a script.

use super::client::{Call, Client};
use super::error::Error;
use super::models::DeviceTemplate;
use super::pager::{Accepts, ListOptions, Pager};
use reqwest::Method;

impl Client {
    /// Lists the device templates (`DeviceTemplates_List`); filter, orderby and maxpagesize
    /// switch to the preview api-version.
    pub fn list_device_templates(&self, options: &ListOptions) -> Pager<DeviceTemplate> {
        Pager::new(
            self,
            "DeviceTemplates_List",
            &["deviceTemplates"],
            options,
            Some(Accepts::All),
        )
    }

    /// Gets one device template by its DTMI (`DeviceTemplates_Get`).
    pub async fn get_device_template(&self, id: &str) -> Result<DeviceTemplate, Error> {
        let op = "DeviceTemplates_Get";
        let url = self.url(op, &["deviceTemplates", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Publishes a device template under its DTMI (`DeviceTemplates_Create`).
    pub async fn create_device_template(
        &self,
        id: &str,
        template: &DeviceTemplate,
    ) -> Result<DeviceTemplate, Error> {
        let op = "DeviceTemplates_Create";
        let url = self.url(op, &["deviceTemplates", id], false)?;
        self.json(Call::new(op, Method::PUT, url).json(template)?)
            .await
    }

    /// Deletes a device template (`DeviceTemplates_Remove`).
    pub async fn delete_device_template(&self, id: &str) -> Result<(), Error> {
        let op = "DeviceTemplates_Remove";
        let url = self.url(op, &["deviceTemplates", id], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }
}
