%%% mod_stratus_pep_export: writes the PEP data of an ejabberd host's users as XEP-0227 files, one
%%% USER@HOST.xml per user with PEP nodes, in the form `stratus import` reads (and Prosody's
%%% mod_storage_xep0227 writes): per user, <pubsub xmlns='...#owner'> with each node's
%%% <configure/> form, <affiliations/> and <subscriptions/>, and <pubsub xmlns='...pubsub'> with
%%% its <items/>, oldest first.
%%%
%%% ejabberd 23.01's `export_piefxis` leaves PEP out. This module reads mod_pubsub's mnesia
%%% tables (pubsub_node, pubsub_state, pubsub_item: the default backend) and adds one command:
%%%
%%%   ejabberdctl stratus_export_pep HOST DIR
%%%
%%% Load it like any module (compiled with erlc onto ejabberd's code path, see the README), in
%%% `modules:` as `mod_stratus_pep_export: {}`. It changes nothing: it only reads.

-module(mod_stratus_pep_export).

-behaviour(gen_mod).

-export([start/2, stop/1, reload/3, depends/2, mod_options/1, mod_doc/0]).
-export([export/2]).

-include("ejabberd_commands.hrl").
-include("pubsub.hrl").

-define(NS_PIE, <<"urn:xmpp:pie:0">>).
-define(NS_PUBSUB, <<"http://jabber.org/protocol/pubsub">>).
-define(NS_OWNER, <<"http://jabber.org/protocol/pubsub#owner">>).
-define(NS_DATA, <<"jabber:x:data">>).

start(_Host, _Opts) ->
    ejabberd_commands:register_commands(?MODULE, commands()),
    ok.

stop(_Host) ->
    ok.

reload(_Host, _NewOpts, _OldOpts) ->
    ok.

depends(_Host, _Opts) ->
    [].

mod_options(_Host) ->
    [].

mod_doc() ->
    #{desc => "Writes users' PEP data as XEP-0227 files for stratus import."}.

commands() ->
    [#ejabberd_commands{name = stratus_export_pep, tags = [mnesia],
                        desc = "Write the PEP nodes of HOST's users as XEP-0227 files into DIR",
                        module = ?MODULE, function = export,
                        args = [{host, binary}, {dir, string}],
                        args_desc = ["Virtual host", "Directory for USER@HOST.xml files"],
                        result = {res, restuple}}].

%% One file per user of Host with PEP nodes; returns {ok, "N users, M nodes, K items"}.
export(Host, Dir) ->
    Nodes = mnesia:dirty_match_object(
              #pubsub_node{nodeid = {{'_', Host, <<>>}, '_'}, _ = '_'}),
    ByUser = lists:foldl(
               fun(#pubsub_node{nodeid = {{U, _, _}, _}} = N, Acc) ->
                       maps:update_with(U, fun(L) -> [N | L] end, [N], Acc)
               end, #{}, Nodes),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Counts = maps:fold(
               fun(User, UserNodes, {Us, Ns, Is}) ->
                       {Xml, Items} = user_xml(Host, User, lists:reverse(UserNodes)),
                       File = filename:join(Dir, <<User/binary, "@", Host/binary, ".xml">>),
                       ok = file:write_file(File, fxml:element_to_binary(Xml)),
                       {Us + 1, Ns + length(UserNodes), Is + Items}
               end, {0, 0, 0}, ByUser),
    {Users, NodeCount, ItemCount} = Counts,
    {ok, io_lib:format("~B users, ~B nodes, ~B items written to ~s",
                       [Users, NodeCount, ItemCount, Dir])}.

user_xml(Host, User, Nodes) ->
    Owner = lists:flatmap(fun owner_els/1, Nodes),
    {ItemEls, Count} = lists:foldl(
                         fun(N, {Els, C}) ->
                                 {El, K} = items_el(N),
                                 {[El | Els], C + K}
                         end, {[], 0}, Nodes),
    UserEl = el(<<"user">>, [{<<"name">>, User}],
                [el(<<"pubsub">>, [{<<"xmlns">>, ?NS_OWNER}], Owner),
                 el(<<"pubsub">>, [{<<"xmlns">>, ?NS_PUBSUB}], lists:reverse(ItemEls))]),
    Doc = el(<<"server-data">>, [{<<"xmlns">>, ?NS_PIE}],
             [el(<<"host">>, [{<<"jid">>, Host}], [UserEl])]),
    {Doc, Count}.

owner_els(#pubsub_node{nodeid = {_, Node}, id = Nidx, options = Options}) ->
    States = mnesia:dirty_index_read(pubsub_state, Nidx, #pubsub_state.nodeidx),
    Affs = [el(<<"affiliation">>, [{<<"jid">>, jid:encode(jid:make(LJID))},
                                   {<<"affiliation">>, atom_to_binary(A, utf8)}], [])
            || #pubsub_state{stateid = {LJID, _}, affiliation = A} <- States,
               A /= none, A /= owner],
    Subs = [el(<<"subscription">>, [{<<"jid">>, jid:encode(jid:make(LJID))},
                                    {<<"subscription">>, <<"subscribed">>}], [])
            || #pubsub_state{stateid = {LJID, _}, subscriptions = S} <- States,
               lists:keymember(subscribed, 1, S)],
    Form = el(<<"x">>, [{<<"xmlns">>, ?NS_DATA}, {<<"type">>, <<"submit">>}],
              [field(<<"FORM_TYPE">>, [<<"http://jabber.org/protocol/pubsub#node_config">>])
               | [F || {K, V} <- Options, F <- option_field(K, V)]]),
    [el(<<"configure">>, [{<<"node">>, Node}], [Form])]
        ++ [el(<<"affiliations">>, [{<<"node">>, Node}], Affs) || Affs /= []]
        ++ [el(<<"subscriptions">>, [{<<"node">>, Node}], Subs) || Subs /= []].

items_el(#pubsub_node{nodeid = {_, Node}, id = Nidx}) ->
    Items = mnesia:dirty_index_read(pubsub_item, Nidx, #pubsub_item.nodeidx),
    Sorted = lists:sort(fun(#pubsub_item{creation = {A, _}}, #pubsub_item{creation = {B, _}}) ->
                                A =< B
                        end, Items),
    Els = [el(<<"item">>, [{<<"id">>, Id}], [P || P <- Payload, element(1, P) == xmlel])
           || #pubsub_item{itemid = {Id, _}, payload = Payload} <- Sorted],
    {el(<<"items">>, [{<<"node">>, Node}], Els), length(Els)}.

%% The node options XEP-0060 section 16.4.3 names, as pubsub#node_config fields.
option_field(K, V) when K == access_model; K == publish_model; K == notification_type;
                        K == send_last_published_item ->
    [field(var(K), [atom_to_binary(V, utf8)])];
option_field(K, V) when K == persist_items; K == deliver_payloads; K == deliver_notifications;
                        K == notify_config; K == notify_delete; K == notify_retract;
                        K == presence_based_delivery ->
    [field(var(K), [case V of true -> <<"1">>; _ -> <<"0">> end])];
option_field(max_items, max) ->
    [field(<<"pubsub#max_items">>, [<<"max">>])];
option_field(K, V) when (K == max_items orelse K == max_payload_size orelse K == item_expire),
                        is_integer(V) ->
    [field(var(K), [integer_to_binary(V)])];
option_field(title, V) when is_binary(V), V /= <<>> ->
    [field(<<"pubsub#title">>, [V])];
option_field(roster_groups_allowed, V) when is_list(V), V /= [] ->
    [field(<<"pubsub#roster_groups_allowed">>, V)];
option_field(_, _) ->
    [].

var(K) ->
    <<"pubsub#", (atom_to_binary(K, utf8))/binary>>.

field(Var, Values) ->
    el(<<"field">>, [{<<"var">>, Var}], [el(<<"value">>, [], [{xmlcdata, V}]) || V <- Values]).

el(Name, Attrs, Children) ->
    {xmlel, Name, Attrs, Children}.
