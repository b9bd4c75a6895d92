// Registers devices with the official Node DPS device SDK, as a device would, for
// tests/it/dps_mqtt_node.rs. Reads a JSON array of cases on stdin and writes a JSON array of
// outcomes (one per case, in order) on stdout:
//   case:    {"transport": "mqtt", "host": "127.0.0.1:PORT", "idScope", "registrationId",
//             "certFile" + "keyFile" (X.509: leaf, then its chain) | "symmetricKey",
//             "payload" (optional)}
//   outcome: {"ok": true, "result": <registration result>}
//          | {"ok": false, "name": <error class>, "message": ..., "result": <service body>}
// The emulator's CA comes from NODE_EXTRA_CA_CERTS; nothing here weakens TLS checks.
'use strict';
const fs = require('fs');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt } = require('azure-iot-provisioning-device-mqtt');
const { X509Security } = require('azure-iot-security-x509');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const transports = { mqtt: () => new Mqtt() };

async function register(c) {
  const security = c.symmetricKey
    ? new SymmetricKeySecurityClient(c.registrationId, c.symmetricKey)
    : new X509Security(c.registrationId, {
        cert: fs.readFileSync(c.certFile, 'utf8'),
        key: fs.readFileSync(c.keyFile, 'utf8'),
      });
  const client = ProvisioningDeviceClient.create(c.host, c.idScope, transports[c.transport](), security);
  if (c.payload) {
    client.setProvisioningPayload(c.payload);
  }
  try {
    return { ok: true, result: await client.register() };
  } catch (err) {
    return {
      ok: false,
      name: err && err.name,
      message: String(err && err.message),
      result: (err && err.result) || null,
    };
  }
}

(async () => {
  const cases = JSON.parse(fs.readFileSync(0, 'utf8'));
  const outcomes = [];
  for (const c of cases) {
    outcomes.push(await register(c));
  }
  // Exit once written: a transport the SDK left open must not keep the test waiting.
  process.stdout.write(JSON.stringify(outcomes), () => process.exit(0));
})();
