%%% mod_stratus_multicast: XEP-0033 (Extended Stanza Addressing) multicast on an ejabberd virtual
%%% host itself, for this server's components such as the stratus pubsub service.
%%%
%%% ejabberd's own mod_multicast serves XEP-0033 from multicast.HOST. For a component it decodes
%%% every address twice (once into its records, once more per copy), groups them with generic
%%% code and fans out from its own process. This module serves the host's own JID (XEP-0033
%%% section 2.1: the server itself) to trusted local components only and reads the address list
%%% as it arrived: each address prepared once, one message
%%% built per stanza, each copy routed with ejabberd_router:route/1 like any other message
%%% (privacy lists, blocking, carbons, stream management and offline storage apply as usual).
%%% With stratus at 100 subscribers this made a notification cost ejabberd less CPU than one of
%%% its own mod_pubsub (docs/benchmarks.md).
%%%
%%% Build (erlc from erlang-base; the include directory is the xmpp library's):
%%%   erlc -I /usr/lib/erlang/lib/p1_xmpp-*/include mod_stratus_multicast.erl
%%% Install: copy mod_stratus_multicast.beam to
%%%   $HOME/.ejabberd-modules/mod_stratus_multicast/ebin/   (HOME of the ejabberd user)
%%% or to ejabberd's own ebin directory, then in ejabberd.yml:
%%%   modules:
%%%     mod_stratus_multicast: {}   # limit: 99, senders: [] (= the ejabberd_service hosts)
%%%
%%% Rules (XEP-0033): only the external components this server accepts (the `hosts` of its
%%% ejabberd_service listeners), or the domains listed in `senders`, may use it: not users, not
%%% the server's other services (MUC, upload), which get `forbidden`, and see neither the feature
%%% nor the limit form in disco#info. Only this host's users are delivered to. A stanza over
%%% `limit` addresses is refused whole (not-acceptable, section 8); an address that cannot be
%%% delivered (jid-malformed: not a valid JID; forbidden: another domain) is refused alone: the
%%% others get their copies and the error lists only the refused addresses, so the sender can
%%% deliver to them some other way and nothing is lost. to/cc addresses are kept in the copies
%%% marked delivered='true', bcc addresses are removed, an address already marked delivered is
%%% skipped, and an address listed twice gets one copy. Nothing is kept between stanzas.

-module(mod_stratus_multicast).

-behaviour(gen_mod).

-export([start/2, stop/1, reload/3, depends/2, mod_opt_type/1, mod_options/1, mod_doc/0]).
-export([route/1, disco_identity/5, disco_features/5, disco_info/5]).

-include("xmpp.hrl").

start(Host, _Opts) ->
    ejabberd_hooks:add(local_send_to_resource_hook, Host, ?MODULE, route, 50),
    ejabberd_hooks:add(disco_local_identity, Host, ?MODULE, disco_identity, 50),
    ejabberd_hooks:add(disco_local_features, Host, ?MODULE, disco_features, 50),
    %% After mod_disco's own handler (100), which drops what came before it.
    ejabberd_hooks:add(disco_info, Host, ?MODULE, disco_info, 110),
    ok.

stop(Host) ->
    ejabberd_hooks:delete(local_send_to_resource_hook, Host, ?MODULE, route, 50),
    ejabberd_hooks:delete(disco_local_identity, Host, ?MODULE, disco_identity, 50),
    ejabberd_hooks:delete(disco_local_features, Host, ?MODULE, disco_features, 50),
    ejabberd_hooks:delete(disco_info, Host, ?MODULE, disco_info, 110),
    ok.

reload(_Host, _NewOpts, _OldOpts) ->
    ok.

depends(_Host, _Opts) ->
    [].

%% XEP-0033 section 8: "more than 20 and less than 100".
mod_opt_type(limit) ->
    econf:int(2, 1000);
mod_opt_type(senders) ->
    econf:list(econf:domain()).

mod_options(_Host) ->
    [{limit, 99}, {senders, []}].

mod_doc() ->
    #{desc => ["XEP-0033 multicast on the virtual host itself, for this server's components "
               "(the stratus pubsub service sends one notification stanza for up to 'limit' "
               "subscribers). Only this host's users are delivered to. An address that cannot "
               "be delivered (not a JID, another domain) is refused alone and listed in the "
               "error; the others get their copies. The feature and the limit form are shown "
               "in disco#info only to the senders allowed to use the service."],
      opts =>
          [{limit,
            #{value => "2..1000",
              desc => "Addresses per stanza at most (XEP-0033 section 8: more than 20 and "
                      "less than 100). A stanza with more is refused whole with "
                      "'not-acceptable', every address listed. The default is 99."}},
           {senders,
            #{value => "[Domain, ...]",
              desc => "The domains allowed to use the service, such as the stratus "
                      "component's. The default, an empty list, allows the domains listed "
                      "in the 'hosts' of this server's ejabberd_service listeners (its "
                      "external components), and no other service (MUC, upload, proxy). "
                      "A listener without 'hosts' accepts any domain, so with one the "
                      "stratus domains must be listed here."}}],
      example =>
          ["modules:",
           "  mod_stratus_multicast:",
           "    limit: 99",
           "    senders: [pubsub.example.org]"]}.

%%% Disco (XEP-0033 section 2.1): the feature and the limit (a XEP-0128 form, the one
%%% mod_multicast uses) for those who may use the service, nothing for anyone else.
%%%
%%% ejabberd 23.01's mod_disco runs disco_info with the host but not the requester. It runs
%%% disco_local_identity (which has the requester) just before, in the same process and for
%%% the same request, so that hook notes whether the requester is allowed and disco_info takes
%%% the note (and erases it). Any other caller of disco_info finds no note: no form.

disco_identity(Acc, From, #jid{lserver = Host}, <<"">>, _Lang) ->
    put({?MODULE, disco_allowed}, trusted(Host, From)),
    Acc;
disco_identity(Acc, _From, _To, _Node, _Lang) ->
    erase({?MODULE, disco_allowed}),
    Acc.

disco_features({error, _} = Acc, _From, _To, _Node, _Lang) ->
    Acc;
disco_features(Acc, From, #jid{lserver = Host}, <<"">>, _Lang) ->
    case trusted(Host, From) of
        true ->
            Features = case Acc of
                           {result, Fs} -> Fs;
                           _ -> []
                       end,
            {result, [?NS_ADDRESS | Features]};
        false ->
            Acc
    end;
disco_features(Acc, _From, _To, _Node, _Lang) ->
    Acc.

disco_info(Acc, Host, mod_disco, <<"">>, _Lang) ->
    case erase({?MODULE, disco_allowed}) of
        true ->
            Limit = gen_mod:get_module_opt(Host, ?MODULE, limit),
            [#xdata{type = result,
                    fields = [#xdata_field{var = <<"FORM_TYPE">>, type = hidden,
                                           values = [?NS_ADDRESS]},
                              #xdata_field{var = <<"message">>,
                                           values = [integer_to_binary(Limit)]}]}
             | Acc];
        _ ->
            Acc
    end;
disco_info(Acc, _Host, _Module, _Node, _Lang) ->
    Acc.

%% A bare domain among `senders`, or by default one of the external components this server
%% accepts (the hosts of its ejabberd_service listeners): never a user, never another of the
%% server's own services.
trusted(Host, #jid{luser = <<"">>, lresource = <<"">>, lserver = Sender}) ->
    case gen_mod:get_module_opt(Host, ?MODULE, senders) of
        [] ->
            lists:member(Sender, component_domains());
        Senders ->
            lists:member(Sender, Senders)
    end;
trusted(_Host, _From) ->
    false.

%% ejabberd 23.01 gives each listener's options as a map, `hosts` as a list of
%% {Domain, Password}; a map of Domain => options is taken too.
component_domains() ->
    lists:append([hosts(maps:get(hosts, Opts, []))
                  || {_EndPoint, ejabberd_service, Opts} <- ejabberd_option:listen(),
                     is_map(Opts)]).

hosts(Hosts) when is_map(Hosts) ->
    maps:keys(Hosts);
hosts(Hosts) when is_list(Hosts) ->
    [element(1, H) || H <- Hosts, is_tuple(H)].

%%% Routing: messages to the host's own JID come here (ejabberd_local runs this hook for every
%%% stanza to the bare host that is not an IQ), in the sender's routing process, so a later IQ
%%% from the same sender (stratus's barrier ping) is answered after the copies are routed.

route(#message{type = error}) ->
    ok;
route(#message{to = #jid{lserver = Host}, from = From} = Msg) ->
    Els = xmpp:get_els(Msg),
    case lists:partition(fun is_addresses/1, Els) of
        {[], _} ->
            ok;
        {[Addresses | _], Rest} ->
            case trusted(Host, From) of
                true ->
                    Limit = gen_mod:get_module_opt(Host, ?MODULE, limit),
                    deliver(Msg, Host, Limit, children(Addresses), Rest);
                false ->
                    refuse(Msg, xmpp:err_forbidden(
                                  <<"Multicast is only for this server's components">>,
                                  xmpp:get_lang(Msg)))
            end,
            stop
    end;
route(_Packet) ->
    ok.

is_addresses(#xmlel{name = <<"addresses">>} = El) ->
    xmpp:get_ns(El) == ?NS_ADDRESS;
is_addresses(#addresses{}) ->
    true;
is_addresses(_) ->
    false.

children(#xmlel{children = Children}) ->
    [C || #xmlel{name = <<"address">>} = C <- Children];
children(#addresses{} = A) ->
    children(xmpp:encode(A)).

deliver(Msg, _Host, Limit, Addresses, _Rest) when length(Addresses) > Limit ->
    Text = <<"More than ", (integer_to_binary(Limit))/binary, " addresses">>,
    refuse(Msg, xmpp:err_not_acceptable(Text, xmpp:get_lang(Msg)));
deliver(Msg, Host, _Limit, Addresses, Rest) ->
    {Recipients, Kept, Refused} =
        collect(Addresses, {Host, xmpp:get_lang(Msg)}, #{}, [], [], []),
    Template = xmpp:set_els(Msg, Rest ++ addresses(Kept)),
    lists:foreach(fun(To) -> ejabberd_router:route(xmpp:set_to(Template, To)) end,
                  Recipients),
    %% Only the addresses that cannot be delivered are refused, listed in the error so that the
    %% sender can deliver to them some other way; the others got their copy.
    case Refused of
        [] ->
            ok;
        [{_, Err} | _] ->
            refuse(xmpp:set_els(Msg, Rest ++ addresses([A || {A, _} <- Refused])), Err)
    end.

addresses([]) ->
    [];
addresses(List) ->
    [#xmlel{name = <<"addresses">>, attrs = [{<<"xmlns">>, ?NS_ADDRESS}], children = List}].

%% The recipients in order (each once), the addresses the copies keep (section 5 steps 6-8) and
%% the addresses refused, each with its section 8 error.
collect([], _Ctx, _Seen, Recipients, Kept, Refused) ->
    {lists:reverse(Recipients), lists:reverse(Kept), lists:reverse(Refused)};
collect([#xmlel{attrs = Attrs} = A | More], Ctx, Seen, Recipients, Kept, Refused) ->
    Type = attr(<<"type">>, Attrs),
    Delivery = (Type == <<"to">> orelse Type == <<"cc">> orelse Type == <<"bcc">>)
        andalso attr(<<"delivered">>, Attrs) /= <<"true">>,
    Kept1 = case Type of
                <<"bcc">> -> Kept;
                T when T == <<"to">>; T == <<"cc">> ->
                    [A#xmlel{attrs = lists:keystore(<<"delivered">>, 1, Attrs,
                                                     {<<"delivered">>, <<"true">>})} | Kept];
                _ -> [A | Kept]
            end,
    case Delivery of
        false ->
            collect(More, Ctx, Seen, Recipients, Kept1, Refused);
        true ->
            case recipient(Attrs, Ctx) of
                {ok, To} ->
                    Key = jid:tolower(To),
                    case maps:is_key(Key, Seen) of
                        true ->
                            collect(More, Ctx, Seen, Recipients, Kept1, Refused);
                        false ->
                            collect(More, Ctx, Seen#{Key => true}, [To | Recipients], Kept1,
                                    Refused)
                    end;
                {error, Err} ->
                    collect(More, Ctx, Seen, Recipients, Kept, [{A, Err} | Refused])
            end
    end.

recipient(Attrs, {Host, Lang}) ->
    case {attr(<<"uri">>, Attrs), attr(<<"node">>, Attrs), attr(<<"jid">>, Attrs)} of
        {<<"">>, <<"">>, J} when J /= <<"">> ->
            case decode(J) of
                {ok, #jid{lserver = Host} = To} ->
                    {ok, To};
                {ok, #jid{}} ->
                    {error, xmpp:err_forbidden(
                              <<"Only addresses at ", Host/binary, " are delivered">>,
                              Lang)};
                error ->
                    {error, xmpp:err_jid_malformed(<<"Invalid address">>, Lang)}
            end;
        _ ->
            {error, xmpp:err_jid_malformed(<<"Only 'jid' addresses are supported">>,
                                           Lang)}
    end.

%% Each address is prepared (jid:decode/1, stringprep) once per stanza, and not remembered: a
%% table shared by all processes (ETS, ets_cache) costs as much per lookup as the preparation
%% itself, since the JID is copied out of it (0.6-1.0 us against 0.5-1.1 us per address,
%% docs/benchmarks.md), and a cache in the connection's process dictionary grows inside a
%% process the module does not own.
decode(J) ->
    try {ok, jid:decode(J)}
    catch _:{bad_jid, _} -> error
    end.

attr(Name, Attrs) ->
    case lists:keyfind(Name, 1, Attrs) of
        {_, V} -> V;
        false -> <<"">>
    end.

%% XEP-0033 section 8: the whole stanza comes back, addresses included, so that the sender
%% can deliver it some other way.
refuse(Msg, Err) ->
    ejabberd_router:route_error(Msg, Err).
