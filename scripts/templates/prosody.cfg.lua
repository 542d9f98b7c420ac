-- Private Prosody 0.12 instance for stratus tests and the demo (written by scripts/xmpp-server.sh).
local base = os.getenv("PROSODY_DIR")
run_as_root = true
pidfile = base .. "/prosody.pid"
data_path = base .. "/data"
certificates = base .. "/certs"
log = { { levels = { min = "info" }, to = "file", filename = base .. "/prosody.log" } }
network_settings = { nagle = false } -- Nagle on adds up to 40 ms per notification
-- PROSODY_GC=generational: Lua 5.4's generational collector instead of Prosody's default
-- (incremental, pause 105 %), which spends most of a login storm's CPU (docs/benchmarks.md).
local gc_mode = os.getenv("PROSODY_GC") or ""
if gc_mode ~= "" then gc = { mode = gc_mode } end
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
-- PROSODY_DOMAIN: the server's domain (localhost unless set); component domains are under it.
local domain = os.getenv("PROSODY_DOMAIN") or ""
if domain == "" then domain = "localhost" end
-- PROSODY_S2S_PORT=P: server-to-server streams on 127.0.0.1:P, dialback without TLS (federation
-- tests on one machine; names come from the resolver of /etc/resolv.conf).
local s2s = tonumber(os.getenv("PROSODY_S2S_PORT") or "")
-- PROSODY_BUILTIN_PEP=1: Prosody's own PEP serves its users (data for the migration tests).
local builtin_pep = os.getenv("PROSODY_BUILTIN_PEP") == "1"
local disabled = { "carbons"; "mam"; "offline" }
if builtin_pep then
    table.insert(modules, "pep")
else
    for _, m in ipairs({ "pep"; "private"; "bookmarks" }) do table.insert(disabled, m) end
end
if not s2s then table.insert(disabled, "s2s") end
if not tls then table.insert(disabled, "tls") end
if s2s then
    table.insert(modules, "dialback")
    s2s_ports = { s2s }; s2s_interfaces = { "127.0.0.1" }
    s2s_secure_auth = false
    s2s_require_encryption = false
end
modules_enabled = modules
modules_disabled = disabled
authentication = "internal_hashed"
storage = "internal"
allow_registration = true
c2s_require_encryption = tls
if tls then
    ssl = { certificate = base .. "/certs/localhost.crt"; key = base .. "/certs/localhost.key" }
end
allow_unencrypted_plain_auth = true

VirtualHost(domain)
if multicast ~= "" then
    -- Every test component but nomulticast.localhost may multicast (XEP-0033 refusal tests).
    local senders = { "pubsub." .. domain }
    for i = 1, 16 do senders[#senders + 1] = ("ps%02d.%s"):format(i, domain) end
    multicast_senders = senders
end
-- (PEP is served to localhost's users: another domain is started without it.)
if pep then
    privileged_entities = {
        ["pubsub.localhost"] = { roster = "get"; message = "outgoing"; presence = "roster" };
    }
    delegations = {
        ["http://jabber.org/protocol/pubsub"] = { jid = "pubsub.localhost" };
        ["http://jabber.org/protocol/pubsub#owner"] = { jid = "pubsub.localhost" };
        ["jabber:iq:private"] = { jid = "pubsub.localhost" };
    }
end

-- The stratus component domains: pubsub.localhost, plus ps01..ps16 so that tests can each run
-- their own stratus instance against one server.
for i = 0, 16 do
    Component(i == 0 and ("pubsub." .. domain) or ("ps%02d.%s"):format(i, domain))
    component_secret = "secret"
    if i == 0 and pep then
        modules_enabled = { "privilege"; "delegation" }
    end
end
-- A component the multicast module refuses (multicast_senders above leaves it out).
Component("nomulticast." .. domain)
    component_secret = "secret"

-- Built-in pubsub, for side-by-side comparisons (memory storage: its fastest).
Component "pubsub-builtin.localhost" "pubsub"
    storage = "memory"
    -- Only admins create nodes on Prosody's service: the load tool's publishers (scripts/bench.sh).
    admins = { "load-p0@localhost"; "b1-p0@localhost"; "b10-p0@localhost"; "b100-p0@localhost"; "b1000-p0@localhost" }
