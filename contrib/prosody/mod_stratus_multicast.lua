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
-- the stanza arrived on; anyone else gets `forbidden`. Only this host's users are delivered to, so
-- it never relays to other servers. An address it cannot deliver (another domain, not a JID) is
-- refused alone: the others get their copies, and the error lists the refused addresses. Every
-- error carries the addresses it refuses (§8), so that the sender can deliver them some other
-- way and nothing is lost.

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
-- is most of Prosody's cost per recipient, so a copy that nobody looks into is written from the
-- template's serialization, done once:
-- - a copy has no children of its own until some code reads or changes them (`tags`, an index,
--   `#`): then it gets its own deep copy of the template's children, so a module that edits a
--   child in place (a filter, a privacy module) changes that recipient's copy only, and a copy
--   whose children are its own is serialized by Prosody's own code;
-- - each copy has its own attribute table, so changed attributes affect no other copy;
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
	-- The copy's own children, deep copies of the template's, made on first use.
	local function own_children(t)
		local tags = {};
		for i = 1, n do
			local child = template[i];
			if child.name then
				child = st.clone(child);
				tags[#tags + 1] = child;
			end
			rawset(t, i, child);
		end
		rawset(t, "tags", tags);
	end
	local methods = setmetatable({
		-- Prosody's c2s send formats every stanza's top tag for a debug log line, even with
		-- debug logging off: a clone and a serialization per recipient, unless answered here.
		top_tag = function (t)
			local open = start_tag(t);
			if open then return open .. ">"; end
			return stanza_mt.top_tag(t);
		end;
	}, { __index = stanza_mt });
	local copy_mt = {
		__metatable = stanza_mt;
		__index = function (t, k)
			if k == "tags" or type(k) == "number" then
				if rawget(t, "tags") == nil then own_children(t); end
				return rawget(t, k);
			end
			return methods[k];
		end;
		__newindex = function (t, k, v)
			if type(k) == "number" and rawget(t, "tags") == nil then own_children(t); end
			rawset(t, k, v);
		end;
		__len = function (t)
			if rawget(t, "tags") == nil then return n; end
			return rawlen(t);
		end;
		__tostring = function (t)
			if children and rawget(t, "tags") == nil then
				local open = start_tag(t);
				if open then return open .. ">" .. children .. "</" .. t.name .. ">"; end
			end
			return stanza_mt.__tostring(t);
		end;
	};
	return function (to)
		local attr = {};
		for k, v in pairs(template_attr) do attr[k] = v; end
		attr.to = to;
		return setmetatable({ name = template.name, attr = attr }, copy_mt);
	end
end

-- XEP-0033 §8 names the conditions. The error carries `addresses`, the addresses refused (all
-- of them when the stanza is refused whole): st.error_reply copies no children.
local function refuse(origin, stanza, kind, condition, text, addresses)
	local reply = st.error_reply(stanza, kind, condition, text);
	if addresses then reply:reset():add_child(addresses); end
	origin.send(reply);
	return true;
end

module:hook("message/host", function (event)
	local origin, stanza = event.origin, event.stanza;
	local addresses = stanza:get_child("addresses", xmlns_address);
	if not addresses or stanza.attr.type == "error" then return; end
	if not trusted(origin, stanza.attr.from or "") then
		return refuse(origin, stanza, "auth", "forbidden", "Multicast is only for this server's trusted components", st.clone(addresses));
	end

	-- Prosody reads a stream 4 KiB at a time by default (network_default_read_size), less than one
	-- multicast stanza for 100 recipients: every subscriber's connection would then be flushed
	-- once per notification. Reading a trusted component's stream in larger chunks lets one loop
	-- iteration fan out several notifications and write them to each connection together.
	if origin.conn and origin.conn.set_mode then origin.conn:set_mode(read_size); end

	local recipients, seen, count = {}, {}, 0;
	local keep = st.stanza("addresses", { xmlns = xmlns_address });
	-- Refused addresses, by condition: { condition = { text, <addresses/> } }.
	local refused, refused_order = {}, {};
	local function refuse_address(address, condition, text)
		local entry = refused[condition];
		if not entry then
			entry = { text, st.stanza("addresses", { xmlns = xmlns_address }) };
			refused[condition] = entry;
			refused_order[#refused_order + 1] = condition;
		end
		entry[2]:add_child(st.clone(address));
	end
	for address in addresses:childtags("address", xmlns_address) do
		count = count + 1;
		if count > limit then
			return refuse(origin, stanza, "modify", "not-acceptable", "More than " .. limit .. " addresses", st.clone(addresses));
		end
		local kind, delivered = address.attr.type, address.attr.delivered == "true";
		local ok = true;
		if (kind == "to" or kind == "cc" or kind == "bcc") and not delivered then
			-- A connected resource's JID is already in canonical form: no need to prepare it.
			local to = address.attr.jid;
			if address.attr.uri or address.attr.node or not to then
				ok = false;
				refuse_address(address, "jid-malformed", "Only 'jid' addresses are supported");
			else
				if not full_sessions[to] then to = jid_prep(to); end
				if not to then
					ok = false;
					refuse_address(address, "jid-malformed", "Invalid address");
				elseif jid_host(to) ~= module.host then
					ok = false;
					refuse_address(address, "forbidden", "Only addresses at " .. module.host .. " are delivered");
				elseif not seen[to] then
					-- An address listed twice gets one copy.
					seen[to] = true;
					recipients[#recipients + 1] = to;
				end
			end
		end
		-- §5 steps 6 and 7: every address is marked delivered, bcc addresses are removed.
		if ok and kind ~= "bcc" then
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
	for _, condition in ipairs(refused_order) do
		local entry = refused[condition];
		local kind = condition == "forbidden" and "cancel" or "modify";
		refuse(origin, stanza, kind, condition, entry[1], entry[2]);
	end
	return true;
end, 10);
