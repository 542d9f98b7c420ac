-- Private Prosody 0.12 instance for stratus tests and the demo (written by scripts/xmpp-server.sh).
local base = os.getenv("PROSODY_DIR")
run_as_root = true
pidfile = base .. "/prosody.pid"
data_path = base .. "/data"
certificates = base .. "/certs"
log = { { levels = { min = "info" }, to = "file", filename = base .. "/prosody.log" } }
network_settings = { nagle = false } -- Nagle on adds up to 40 ms per notification
interfaces = { "127.0.0.1" }
c2s_ports = { tonumber(os.getenv("PROSODY_C2S_PORT")) }; c2s_interfaces = { "127.0.0.1" }
component_ports = { tonumber(os.getenv("PROSODY_COMPONENT_PORT")) }; component_interfaces = { "127.0.0.1" }
http_ports = {}; https_ports = {}
-- PROSODY_PEP=1: pubsub.localhost serves PEP through XEP-0355 delegation and XEP-0356 privileges.
local pep = os.getenv("PROSODY_PEP") == "1"
local modules = { "roster"; "saslauth"; "disco"; "ping"; "register"; "presence"; "message"; "iq" }
if pep then
    table.insert(modules, "privilege")
    table.insert(modules, "delegation")
end
-- PROSODY_TLS=1: c2s requires STARTTLS (certificate in certs/, made by scripts/xmpp-server.sh).
local tls = os.getenv("PROSODY_TLS") == "1"
if tls then table.insert(modules, "tls") end
-- PROSODY_MULTICAST=DIR: XEP-0033 for the components, from DIR/mod_stratus_multicast.lua.
local multicast = os.getenv("PROSODY_MULTICAST") or ""
if multicast ~= "" then
    plugin_paths = { multicast }
    table.insert(modules, "stratus_multicast")
end
modules_enabled = modules
modules_disabled = tls and { "s2s"; "pep"; "carbons"; "mam"; "offline" }
    or { "s2s"; "tls"; "pep"; "carbons"; "mam"; "offline" }
authentication = "internal_hashed"
storage = "internal"
allow_registration = true
c2s_require_encryption = tls
if tls then
    ssl = { certificate = base .. "/certs/localhost.crt"; key = base .. "/certs/localhost.key" }
end
allow_unencrypted_plain_auth = true

VirtualHost "localhost"
if multicast ~= "" then
    -- Every test component but nomulticast.localhost may multicast (XEP-0033 refusal tests).
    local senders = { "pubsub.localhost" }
    for i = 1, 16 do senders[#senders + 1] = ("ps%02d.localhost"):format(i) end
    multicast_senders = senders
end
if pep then
    privileged_entities = {
        ["pubsub.localhost"] = { roster = "get"; message = "outgoing"; presence = "roster" };
    }
    delegations = {
        ["http://jabber.org/protocol/pubsub"] = { jid = "pubsub.localhost" };
        ["http://jabber.org/protocol/pubsub#owner"] = { jid = "pubsub.localhost" };
    }
end

-- The stratus component domains: pubsub.localhost, plus ps01..ps16 so that tests can each run
-- their own stratus instance against one server.
for i = 0, 16 do
    Component(i == 0 and "pubsub.localhost" or ("ps%02d.localhost"):format(i))
    component_secret = "secret"
    if i == 0 and pep then
        modules_enabled = { "privilege"; "delegation" }
    end
end
-- A component the multicast module refuses (multicast_senders above leaves it out).
Component "nomulticast.localhost"
    component_secret = "secret"

-- Built-in pubsub, for side-by-side comparisons (memory storage: its fastest).
Component "pubsub-builtin.localhost" "pubsub"
    storage = "memory"
    -- Only admins create nodes on Prosody's service: the load tool's publishers (scripts/bench.sh).
    admins = { "load-p0@localhost"; "b1-p0@localhost"; "b10-p0@localhost"; "b100-p0@localhost"; "b1000-p0@localhost" }
