-- mod_stratus_multicast: XEP-0033 (Extended Stanza Addressing) multicast for Prosody 0.12+,
-- for trusted senders such as the stratus pubsub component.
--
-- Prosody has no XEP-0033 service of its own, so an external pubsub component must send one
-- notification stanza per subscriber, and Prosody parses each of them. With this module loaded on
-- a VirtualHost, the component sends one stanza with a list of `bcc` addresses to the host and
-- Prosody copies it to each local recipient: one parse per notification instead of one per
-- subscriber. Each copy goes through Prosody's normal routing (blocking, carbons, stream
-- management, CSI and offline rules all apply to it as to any other message).
--
--   plugin_paths = { "/path/to/stratus/contrib/prosody" }
--   VirtualHost "example.org"
--       modules_enabled = { "stratus_multicast" }
--       -- multicast_senders = { "pubsub.example.org" }  -- default: this server's components
--       -- multicast_limit = 99           -- addresses per stanza (XEP-0033 §8: under 100)
--       -- multicast_read_size = 65536    -- bytes per read on a sender's component stream
--
-- Only components may use it (those in `multicast_senders` when set), checked against the stream
-- the stanza arrived on; anyone else gets `forbidden`. Only this host's users are delivered to: a
-- stanza naming anyone else is refused as a whole (§5 step 5), so it never relays to other
-- servers.

local st = require "util.stanza";
local jid_prep = require "util.jid".prep;
local jid_host = require "util.jid".host;
local dataform = require "util.dataforms".new;

local xmlns_address = "http://jabber.org/protocol/address";
local stanza_mt = st.stanza_mt;
local full_sessions = prosody.full_sessions;
local xml_escape = st.xml_escape;

-- XEP-0033 §8: a configurable limit, "more than 20 and less than 100".
local limit = module:get_option_number("multicast_limit", 99);
local senders = module:get_option_set("multicast_senders", nil);
local read_size = module:get_option_number("multicast_read_size", 65536);

module:add_feature(xmlns_address);
-- The limit, as a XEP-0128 extended disco#info form (the form ejabberd's mod_multicast uses).
module:add_extension(dataform {
	{ name = "FORM_TYPE", type = "hidden", value = xmlns_address };
	{ name = "message", type = "text-single" };
}:form({ message = tostring(limit) }, "result"));

local function trusted(origin, from)
	-- A component's stanzas carry its own domain: Prosody's mod_component refuses others.
	if origin.type ~= "component" or jid_host(from) ~= origin.host then return false; end
	if senders then return senders:contains(origin.host); end
	return true;
end

-- The copies of one multicast stanza, one per recipient. Building and serializing the message
-- is most of Prosody's cost per recipient, so the copies share the template's child elements
-- and their serialization, done once:
-- - nothing on Prosody's delivery path changes a routed message's children in place (what needs
--   changes, such as stream management's delay stamps, clones first);
-- - each copy has its own attribute table and child lists, so attributes, or children added or
--   removed on one copy, affect neither the others nor what it serializes to: a copy whose
--   children are no longer the template's is serialized by Prosody's own code;
-- - a copy is a stanza to everyone else: getmetatable() gives util.stanza's metatable, so
--   st.is_stanza(), st.clone() and stream management's checks treat it as one.
local function copier(template)
	local n = #template;
	-- The start tag every copy has until something changes its attributes: the template's
	-- attributes, then the copy's own 'to' (same XML as Prosody writes; attribute order has no
	-- meaning). None when an attribute is namespaced: Prosody writes those.
	local template_attr, n_attr, prefix = template.attr, 0, { "<", template.name };
	for k, v in pairs(template_attr) do
		n_attr = n_attr + 1;
		if k:find("\1", 1, true) then prefix = nil; break; end
		if k ~= "to" then prefix[#prefix + 1] = " " .. k .. "='" .. xml_escape(v) .. "'"; end
	end
	if template_attr.to == nil then n_attr = n_attr + 1; end
	prefix = prefix and table.concat(prefix);
	local function start_tag(t)
		if not prefix then return nil; end
		local count = 0;
		for k, v in pairs(t.attr) do
			count = count + 1;
			if k ~= "to" and template_attr[k] ~= v then return nil; end
		end
		if count ~= n_attr then return nil; end
		return prefix .. " to='" .. xml_escape(t.attr.to) .. "'";
	end
	-- The children's XML, once (a copy's children are written in its namespace, which is
	-- the template's: none, as for every routed stanza).
	local children;
	if n > 0 and template_attr.xmlns == nil then
		local parts = {};
		for i = 1, n do
			local child = template[i];
			parts[i] = child.name and tostring(child) or xml_escape(child);
		end
		children = table.concat(parts);
	end
	local copy_mt = {
		__metatable = stanza_mt;
		-- Prosody's c2s send formats every stanza's top tag for a debug log line, even with
		-- debug logging off: a clone and a serialization per recipient, unless answered here.
		__index = setmetatable({
			top_tag = function (t)
				local open = start_tag(t);
				if open then return open .. ">"; end
				return stanza_mt.top_tag(t);
			end;
		}, { __index = stanza_mt });
		__tostring = function (t)
			if children and #t == n then
				local same = true;
				for i = 1, n do
					if rawget(t, i) ~= template[i] then same = false; break; end
				end
				local open = same and start_tag(t);
				if open then return open .. ">" .. children .. "</" .. t.name .. ">"; end
			end
			return stanza_mt.__tostring(t);
		end;
	};
	return function (to)
		local attr = {};
		for k, v in pairs(template_attr) do attr[k] = v; end
		attr.to = to;
		local copy = { name = template.name, attr = attr, tags = {} };
		local tags = copy.tags;
		for i = 1, n do
			local child = template[i];
			copy[i] = child;
			if child.name then tags[#tags + 1] = child; end
		end
		return setmetatable(copy, copy_mt);
	end
end

-- XEP-0033 §8 names the conditions; the whole stanza is refused, nothing is delivered (§5 step 5).
local function refuse(origin, stanza, kind, condition, text)
	origin.send(st.error_reply(stanza, kind, condition, text));
	return true;
end

module:hook("message/host", function (event)
	local origin, stanza = event.origin, event.stanza;
	local addresses = stanza:get_child("addresses", xmlns_address);
	if not addresses or stanza.attr.type == "error" then return; end
	if not trusted(origin, stanza.attr.from or "") then
		return refuse(origin, stanza, "auth", "forbidden", "Multicast is only for this server's trusted components");
	end

	-- Prosody reads a stream 4 KiB at a time by default (network_default_read_size), less than one
	-- multicast stanza for 100 recipients: every subscriber's connection would then be flushed
	-- once per notification. Reading a trusted component's stream in larger chunks lets one loop
	-- iteration fan out several notifications and write them to each connection together.
	if origin.conn and origin.conn.set_mode then origin.conn:set_mode(read_size); end

	local recipients, seen, count = {}, {}, 0;
	local keep = st.stanza("addresses", { xmlns = xmlns_address });
	for address in addresses:childtags("address", xmlns_address) do
		count = count + 1;
		if count > limit then
			return refuse(origin, stanza, "modify", "not-acceptable", "More than " .. limit .. " addresses");
		end
		local kind, delivered = address.attr.type, address.attr.delivered == "true";
		if (kind == "to" or kind == "cc" or kind == "bcc") and not delivered then
			if address.attr.uri or address.attr.node then
				return refuse(origin, stanza, "modify", "jid-malformed", "Only 'jid' addresses are supported");
			end
			-- A connected resource's JID is already in canonical form: no need to prepare it.
			local to = address.attr.jid;
			if not full_sessions[to] then to = jid_prep(to); end
			if not to then
				return refuse(origin, stanza, "modify", "jid-malformed", "Invalid address");
			end
			if jid_host(to) ~= module.host then
				return refuse(origin, stanza, "cancel", "forbidden", "Only addresses at " .. module.host .. " are delivered");
			end
			-- An address listed twice gets one copy.
			if not seen[to] then
				seen[to] = true;
				recipients[#recipients + 1] = to;
			end
		end
		-- §5 steps 6 and 7: every address is marked delivered, bcc addresses are removed.
		if kind ~= "bcc" then
			local copy = st.clone(address);
			if kind == "to" or kind == "cc" then copy.attr.delivered = "true"; end
			keep:add_child(copy);
		end
	end

	-- The message without the address list (taken over, not copied: the stanza is ours).
	local template = st.clone(stanza, true);
	for i = 1, #stanza do
		local child = stanza[i];
		if child ~= addresses then
			template[#template + 1] = child;
			if child.name then template.tags[#template.tags + 1] = child; end
		end
	end
	if #keep.tags > 0 then template:add_child(keep); end
	local copy_for = copier(template);
	for i = 1, #recipients do
		module:send(copy_for(recipients[i]), origin);
	end
	return true;
end, 10);
