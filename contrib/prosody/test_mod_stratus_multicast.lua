-- Unit test of mod_stratus_multicast.lua outside Prosody: Prosody's own util.stanza, a stand-in
-- for the module API that records what the module routes. Run by tests/prosody_module.rs:
--   lua5.4 contrib/prosody/test_mod_stratus_multicast.lua [PROSODY_LIB_DIR]
-- Checks that every copy serializes exactly as Prosody serializes the same stanza, also after a
-- copy's attributes or children change on the way, and that copies stay stanzas.

local lib = arg[1] or "/usr/lib/prosody";
package.path = lib .. "/?.lua;" .. package.path;
package.cpath = lib .. "/?.so;" .. package.cpath;
local here = arg[0]:match("^(.*)/[^/]*$") or ".";

local st = require "util.stanza";

local hooks, sent, features = {}, {}, {};
module = {
	host = "localhost";
	get_option_number = function (_, _, default) return default; end;
	get_option_set = function (_, _, default) return default; end;
	add_feature = function (_, f) features[#features + 1] = f; end;
	add_extension = function () end;
	hook = function (_, name, fn) hooks[name] = fn; end;
	send = function (_, stanza) sent[#sent + 1] = stanza; end;
};
prosody = { full_sessions = { ["a@localhost/r"] = {} } };
assert(loadfile(here .. "/mod_stratus_multicast.lua"))();

local failures = 0;
local function check(cond, what)
	if not cond then
		failures = failures + 1;
		io.stderr:write("FAIL: ", what, "\n");
	end
end

local origin_sent = {};
local origin = { type = "component", host = "pubsub.localhost",
	send = function (s) origin_sent[#origin_sent + 1] = s; end };

-- As Prosody's parser gives them, every element carries its namespace.
local xmlns_address = "http://jabber.org/protocol/address";

local function multicast(extra_attr)
	local m = st.message({ from = "pubsub.localhost", to = "localhost", type = "headline", id = "x" })
		:tag("event", { xmlns = "http://jabber.org/protocol/pubsub#event" })
			:tag("items", { node = "n<&>'\"" })
				:tag("item", { id = "i1" })
					:tag("entry", { xmlns = "urn:example" }):text("a < b & 'c'"):up()
				:up()
			:up()
		:up()
		:tag("addresses", { xmlns = xmlns_address })
			:tag("address", { xmlns = xmlns_address, type = "bcc", jid = "a@localhost/r" }):up()
			:tag("address", { xmlns = xmlns_address, type = "bcc", jid = "B@LOCALHOST/r" }):up()
			:tag("address", { xmlns = xmlns_address, type = "to", jid = "c@localhost" }):up()
			:tag("address", { xmlns = xmlns_address, type = "bcc", jid = "b@localhost/r" }):up()
		:up();
	for k, v in pairs(extra_attr or {}) do m.attr[k] = v; end
	return m;
end

-- XML text with attributes in sorted order (Lua tables, and so Prosody, have none of their own),
-- read back with Prosody's parser: two texts that mean the same give the same result.
local xml_parse = require "util.xml".parse;
local function canonical(text)
	local function walk(e, out)
		local keys = {};
		for k in pairs(e.attr) do keys[#keys + 1] = k; end
		table.sort(keys);
		out[#out + 1] = "<" .. e.name;
		for _, k in ipairs(keys) do out[#out + 1] = " " .. k .. "=" .. string.format("%q", e.attr[k]); end
		out[#out + 1] = ">";
		for _, child in ipairs(e) do
			if type(child) == "table" then walk(child, out) else out[#out + 1] = string.format("%q", child); end
		end
		out[#out + 1] = "</" .. e.name .. ">";
		return out;
	end
	local parsed = assert(xml_parse(text), "not well-formed: " .. text);
	return table.concat(walk(parsed, {}));
end

-- What Prosody itself writes for the same stanza, and what the copy writes, compared as XML.
local function same_as_prosody(copy)
	return canonical(tostring(copy)) == canonical(tostring(st.clone(copy)));
end
local function plain(copy) return tostring(st.clone(copy)); end

check(features[1] == "http://jabber.org/protocol/address", "feature advertised");
local handled = hooks["message/host"]({ origin = origin, stanza = multicast() });
check(handled == true, "stanza handled");
check(#sent == 3, "three copies (b listed twice gets one), got " .. #sent);
check(#origin_sent == 0, "no error");
local tos = {};
for i, copy in ipairs(sent) do
	tos[i] = copy.attr.to;
	check(st.is_stanza(copy), "copy " .. i .. " is a stanza");
	check(getmetatable(copy) == st.stanza_mt, "copy " .. i .. " has the stanza metatable");
	check(same_as_prosody(copy), "copy " .. i .. " serializes as Prosody does:\n"
		.. tostring(copy) .. "\n" .. plain(copy));
	check(canonical(copy:top_tag() .. "</message>") == canonical(st.clone(copy):top_tag() .. "</message>"),
		"copy " .. i .. " top tag");
	check(copy:get_child("event", "http://jabber.org/protocol/pubsub#event") ~= nil, "methods work");
	local addresses = copy:get_child("addresses", "http://jabber.org/protocol/address");
	check(addresses and #addresses.tags == 1 and addresses.tags[1].attr.delivered == "true"
		and addresses.tags[1].attr.type == "to", "only the to address, marked delivered");
end
check(tos[1] == "a@localhost/r" and tos[2] == "b@localhost/r" and tos[3] == "c@localhost",
	"recipients in order, prepared: " .. table.concat(tos, " "));

-- A module on the way edits a child of one copy in place (issue 18): only that copy changes.
do
	local first = #sent + 1;
	hooks["message/host"]({ origin = origin, stanza = multicast() });
	local x, y, z = sent[first], sent[first + 1], sent[first + 2];
	local untouched = tostring(z);
	local items = x:get_child("event", "http://jabber.org/protocol/pubsub#event").tags[1];
	items.attr.node = "edited";
	items.tags[1].tags[1][1] = "changed text";
	check(same_as_prosody(x) and tostring(x):find("edited", 1, true)
		and tostring(x):find("changed text", 1, true), "the edited copy shows its edit");
	check(not tostring(y):find("edited", 1, true) and not tostring(y):find("changed text", 1, true),
		"another copy does not see the edit: " .. tostring(y));
	check(tostring(z) == untouched and same_as_prosody(z), "an untouched copy is unchanged");
	check(#y == #z and y:get_child("event", "http://jabber.org/protocol/pubsub#event")
		.tags[1].attr.node == "n<&>'\"", "the other copies' children are the template's");
end

-- Changes on the way: attributes, an added child, a removed child, a namespaced attribute.
local a, b, c = sent[1], sent[2], sent[3];
a.attr.type = "normal"; a.attr.id = "changed";
check(same_as_prosody(a) and tostring(a):find("id='changed'", 1, true), "changed attributes");
check(a:top_tag():find("id='changed'", 1, true), "changed attributes in the top tag");
b:tag("delay", { xmlns = "urn:xmpp:delay", stamp = "2026-01-01T00:00:00Z" }):up();
check(same_as_prosody(b) and tostring(b):find("urn:xmpp:delay", 1, true), "added child");
c:remove_children("addresses", "http://jabber.org/protocol/address");
check(same_as_prosody(c) and not tostring(c):find("addresses", 1, true), "removed child");
c.attr["urn:example:attributes\1flag"] = "1";
check(same_as_prosody(c) and tostring(c):find(":flag='1'", 1, true), "namespaced attribute");
-- Copies do not see each other's changes.
check(not tostring(sent[3]):find("urn:xmpp:delay", 1, true), "copies independent");

-- Refusals (XEP-0033 section 8): one error, listing the refused addresses; returns the
-- condition, the listed JIDs and how many copies were routed.
local function refused(stanza, from_origin)
	local before = #sent;
	origin_sent = {};
	hooks["message/host"]({ origin = from_origin or origin, stanza = stanza });
	local e = origin_sent[1];
	if not (e and e.attr.type == "error" and #origin_sent == 1) then return nil; end
	local listed = {};
	local list = e:get_child("addresses", xmlns_address);
	for address in (list and list:childtags("address") or function () end) do
		listed[#listed + 1] = address.attr.jid;
	end
	return e:get_child("error").tags[1].name, table.concat(listed, " "), #sent - before;
end
local remote = multicast();
remote:get_child("addresses", "http://jabber.org/protocol/address")
	:tag("address", { xmlns = xmlns_address, type = "bcc", jid = "z@example.net" });
local condition, listed, routed = refused(remote);
check(condition == "forbidden" and listed == "z@example.net" and routed == 3,
	"another domain refused alone, the others delivered: " .. tostring(condition) .. " "
	.. tostring(listed) .. " " .. tostring(routed));
local user = { type = "c2s", host = "localhost", send = origin.send };
condition, listed, routed = refused(multicast(), user);
check(condition == "forbidden" and routed == 0 and select(2, listed:gsub("@", "")) == 4,
	"a user refused whole, every address listed: " .. tostring(listed));

if failures > 0 then
	io.stderr:write(failures, " failure(s)\n");
	os.exit(1);
end
print("ok");
