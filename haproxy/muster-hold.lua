-- muster's hold: a request to a backend with no server in service waits for one, instead of
-- getting a 503 at once. Loaded by the template (`lua-load`) and run only under
-- `if { nbsrv(<backend>) eq 0 }`, so it costs nothing while a server is in service.
--
--   http-request lua.muster_hold <backend> <timeout_ms> <page_after_ms>
--
-- The request waits (polling every POLL_MS) until a server of <backend> is in service, then
-- goes on as usual. When <timeout_ms> passes first, txn.muster_hold is set to "timeout" (the
-- template answers a clear 503; "stopping" when HAProxy is stopping). A browser (Accept: text/html) that has waited <page_after_ms>
-- gets txn.muster_hold = "page" instead (the template answers the "app is starting" page,
-- which refreshes itself). <page_after_ms> = 0: no page.
--
-- Each episode (from the first held request of a backend until none waits and a server is
-- in service) is logged once when it starts and once when it ends, with its counts; the
-- totals since HAProxy started are served by `lua.muster_hold_stats` (the stats page's
-- /hold). Arguments come from the template only; nothing from a request becomes code.

local POLL_MS = 10

-- Per backend: the episode under way and the totals.
local backends = {}

local function now_ms()
    local t = core.now()
    return t.sec * 1000 + t.usec // 1000
end

local function state(be)
    local s = backends[be]
    if s == nil then
        s = { waiting = 0, episode = nil,
              held = 0, released = 0, timed_out = 0, pages = 0, episodes = 0, max_ms = 0 }
        backends[be] = s
    end
    return s
end

local function episode_ends(be, s)
    local e = s.episode
    s.episode = nil
    core.Info(string.format(
        "muster hold: backend %s has a server again after %d ms: %d request(s) held, %d released, %d timed out, %d page(s), longest wait %d ms",
        be, now_ms() - e.start, e.held, e.released, e.timed_out, e.pages, e.max_ms))
end

-- (A boolean sample reaches Lua as a boolean or as 0/1: 0 is true in Lua.)
local function hold(txn, be, timeout, page_after)
    local timeout_ms = tonumber(timeout) or 15000
    local page_ms = tonumber(page_after) or 0
    local start = now_ms()
    local s = state(be)
    if s.episode == nil then
        s.episode = { start = start, held = 0, released = 0, timed_out = 0, pages = 0, max_ms = 0 }
        s.episodes = s.episodes + 1
        core.Warning(string.format(
            "muster hold: backend %s has no server in service; requests wait up to %d ms",
            be, timeout_ms))
    end
    local e = s.episode
    e.held = e.held + 1
    s.held = s.held + 1
    s.waiting = s.waiting + 1
    local browser = false
    if page_ms > 0 then
        local accept = txn.http:req_get_headers()["accept"]
        browser = accept ~= nil and accept[0] ~= nil and string.find(accept[0], "text/html", 1, true) ~= nil
    end
    local outcome = nil
    while true do
        if txn.f:nbsrv(be) > 0 then
            break
        end
        -- HAProxy is stopping (its proxies stopped, so nbsrv is 0): holding would only keep
        -- the old process alive; the request gets HAProxy's own 503 at once.
        local stopping = txn.f:stopping()
        if stopping == true or stopping == 1 then
            outcome = "stopping"
            break
        end
        local waited = now_ms() - start
        if waited >= timeout_ms then
            outcome = "timeout"
            break
        end
        if browser and waited >= page_ms then
            outcome = "page"
            break
        end
        core.msleep(POLL_MS)
    end
    local waited = now_ms() - start
    s.waiting = s.waiting - 1
    if waited > e.max_ms then e.max_ms = waited end
    if waited > s.max_ms then s.max_ms = waited end
    if outcome == "timeout" or outcome == "stopping" then
        e.timed_out = e.timed_out + 1
        s.timed_out = s.timed_out + 1
    elseif outcome == "page" then
        e.pages = e.pages + 1
        s.pages = s.pages + 1
    else
        e.released = e.released + 1
        s.released = s.released + 1
    end
    if outcome ~= nil then
        txn:set_var("txn.muster_hold", outcome)
    end
    if s.waiting == 0 and s.episode == e and outcome == nil then
        episode_ends(be, s)
    end
end

core.register_action("muster_hold", { "http-req" }, hold, 3)

-- The totals, one line per backend (an episode that ended by timeouts alone is still open:
-- it ends at the next request released).
core.register_service("muster_hold_stats", "http", function(applet)
    local lines = { "backend held released timed_out pages episodes longest_ms waiting" }
    for be, s in pairs(backends) do
        lines[#lines + 1] = string.format("%s %d %d %d %d %d %d %d", be, s.held, s.released,
            s.timed_out, s.pages, s.episodes, s.max_ms, s.waiting)
    end
    local body = table.concat(lines, "\n") .. "\n"
    applet:set_status(200)
    applet:add_header("content-type", "text/plain")
    applet:add_header("content-length", string.len(body))
    applet:start_response()
    applet:send(body)
end)
