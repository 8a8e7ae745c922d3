/*!
 * dragon.js: the browser client for Dragon realtime servers (wire protocol version 1).
 *
 * Served by every Dragon server at /dragon/dragon.js (classic script, defines the global
 * `dragon`) and /dragon/dragon.mjs (an ES module offering the same members). No build step.
 *
 *   <script src="/dragon/dragon.js"></script>
 *   <script>
 *     const client = new dragon.Dragon();                 // ws(s)://<this origin>/ws
 *     const todos = client.liveList('todo-item', {list_id: 3}, {order_by: ['position']});
 *     todos.onChange(items => render(items));
 *   </script>
 *
 * Semantics worth knowing (see also dragon.d.ts):
 * - Every call returns a promise. Failures reject with a DragonError whose `code` is the
 *   protocol's error code (`validation`, `not_found`, ...), or `timeout` / `disconnected`.
 * - Calls made while the connection is down WAIT IN A QUEUE and are sent once the connection is
 *   back (they still reject with `timeout` if that takes longer than their timeout).
 *   Calls already sent when the connection drops: reads (get_list, get_single, subscribe,
 *   ping, whoami, presence_watch) are sent again after reconnecting; writes (create,
 *   update, delete, custom verbs) reject with `disconnected`, because they may or may not have
 *   been applied. After disconnect(), every pending and queued call rejects with `disconnected`.
 * - Reconnection is automatic (exponential backoff with jitter, unlimited attempts by default).
 *   Every live subscription is re-established with `since` = the last position it saw; events
 *   missed meanwhile are replayed. If the server cannot replay (`recovered: false`), or sends a
 *   `resync` frame, the client emits `resync` and calls the subscription's handler with
 *   `{event: 'resync', route, subs, reason}`; liveList reloads itself automatically.
 * - Close codes 4001 (authentication required) and 1008 (policy) stop reconnection. 4003 (token
 *   expired) stops it too, unless the `token` option is a function: then the client reconnects
 *   (with backoff) and the function gives the fresh token. 1013 (the server's authentication
 *   backend failed) is retried like any drop.
 * - Close code 4009 (idle: the connection sent no request for the server's idle timeout) does
 *   not reconnect by itself: the client goes to state 'idle' and reconnects when it is needed
 *   again: on the next call (queued meanwhile, as while disconnected), on connect() or
 *   reconnectNow(), or in a browser when the page becomes visible or gets the focus. Then
 *   subscriptions, liveLists and presence resume as after any reconnection. If a call was
 *   still waiting when the 4009 came, the client reconnects at once (with backoff) instead.
 * - `token` may be a string or a function returning a string (or a promise of one; null or
 *   undefined: anonymous), called before every (re)connection. A function that throws, rejects
 *   or does not settle within `timeout` counts as a failed connection attempt ('error' event,
 *   then backoff and retry). auth(token) replaces it with that string.
 * - Revoked access: the server ends subscriptions with an `error` event frame
 *   `{event: 'error', route, subs, data: {code, message}}` (code `forbidden`). Each listed
 *   subscription ends (active = false, `error` set; not re-established after a reconnect, no
 *   unsubscribe needed), its handler gets the frame (with `error`: the DragonError), the client
 *   emits 'error' (the DragonError, with `route`, `subs` and `subscriptions`) and sets
 *   `user = null` (the server dropped the connection's user; auth() again to get it back). A
 *   liveList on such a subscription empties, calls onChange once with [], stops, and sets
 *   `error` (`ready` rejects with it if still pending).
 * - Change events may carry `version` (per object, higher = newer). Subscription handlers and
 *   onChannelMessage get every frame as sent, `version` included; liveList ignores a repeated
 *   or older version of an object (also after its deletion) and starts over at each snapshot.
 * - Presence: client.presence(route, key, state) / client.watchPresence(route, key, {count})
 *   return a handle at once (members, onChange, update, leave, byUser, ready, self, conn).
 *   It joins (watches) as soon as connected and again after every reconnection, with the
 *   latest state; members are set from each reply, then follow the events in arrival order.
 */
(function (root) {
  'use strict';

  var PROTOCOL_VERSION = 1;
  // Verbs that may safely be sent again when the connection drops before their reply.
  // (Not unsubscribe: subscription ids belong to one connection and die with it.)
  var RETRYABLE_VERBS = {
    get_list: true, get_single: true, subscribe: true,
    ping: true, whoami: true, presence_watch: true
  };

  // ---------------------------------------------------------------------------------------------
  // Errors

  class DragonError extends Error {
    /**
     * @param {string} code stable protocol code (`validation`, `not_found`, `timeout`, ...)
     * @param {string} [message]
     * @param {*} [details]
     */
    constructor(code, message, details) {
      super(message || code);
      this.name = 'DragonError';
      this.code = code;
      this.details = details === undefined ? null : details;
    }
    static from(errorObject) {
      var e = errorObject && typeof errorObject === 'object' ? errorObject : {};
      return new DragonError(
        typeof e.code === 'string' ? e.code : 'internal',
        typeof e.message === 'string' ? e.message : String(e.code || 'error'),
        e.details
      );
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  function addListener(map, name, cb) {
    if (typeof cb !== 'function') throw new TypeError('callback must be a function');
    var set = map.get(name);
    if (!set) { set = new Set(); map.set(name, set); }
    set.add(cb);
    return function off() { set.delete(cb); };
  }

  function safeCall(cb, args, onError) {
    try {
      return cb.apply(null, args);
    } catch (err) {
      if (onError) onError(err);
      else if (typeof console !== 'undefined') console.error('dragon: listener failed', err);
    }
  }

  function defaultUrl() {
    var loc = root.location;
    if (!loc || !loc.host) {
      throw new TypeError('dragon: no `url` given and no page location to default to');
    }
    return (loc.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + loc.host + '/ws';
  }

  function resolveUrl(url) {
    if (!url) return defaultUrl();
    if (/^wss?:\/\//i.test(url)) return url;
    var loc = root.location;
    if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, 'ws');
    if (loc && loc.host) {
      var base = (loc.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + loc.host;
      if (url.charAt(0) === '/') return base + url;
      return new URL(url, loc.href).href.replace(/^http/i, 'ws');
    }
    throw new TypeError('dragon: cannot resolve WebSocket url ' + url);
  }

  function withToken(url, token) {
    if (token === undefined || token === null || token === '') return url;
    return url + (url.indexOf('?') >= 0 ? '&' : '?') + 'token=' + encodeURIComponent(String(token));
  }

  function backoffDelay(backoff, attempt) {
    if (typeof backoff === 'function') return Math.max(0, Number(backoff(attempt)) || 0);
    var b = backoff || {};
    var initial = b.initial != null ? b.initial : 500;
    var max = b.max != null ? b.max : 15000;
    var factor = b.factor != null ? b.factor : 2;
    var jitter = b.jitter != null ? b.jitter : 0.5;
    var base = Math.min(max, initial * Math.pow(factor, attempt));
    // "Equal jitter": a random share of the delay, so clients restarted together spread out.
    return Math.max(0, Math.round(base * (1 - jitter * Math.random())));
  }

  // ---------------------------------------------------------------------------------------------
  // Ordering (shared with the server's rules: ties by id, strings by Unicode code point,
  // RFC 3339 timestamps as instants, nulls first when ascending)

  var RFC3339 = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/;

  function compareCodePoints(a, b) {
    // JS `<` compares UTF-16 code units, which differs from code point order only when a
    // surrogate pair meets a BMP character above U+D7FF.
    var i = 0, n = Math.min(a.length, b.length);
    while (i < n) {
      var ca = a.charCodeAt(i), cb = b.charCodeAt(i);
      if (ca !== cb) {
        var pa = a.codePointAt(i), pb = b.codePointAt(i);
        return pa < pb ? -1 : pa > pb ? 1 : 0;
      }
      i++;
    }
    return a.length - b.length < 0 ? -1 : a.length === b.length ? 0 : 1;
  }

  function parseInstant(s) {
    var m = RFC3339.exec(s);
    if (!m) return null;
    var ms = Date.parse(m[1] + 'T' + m[2] + (m[4].toUpperCase() === 'Z' ? 'Z' : m[4]));
    if (isNaN(ms)) return null;
    var frac = ((m[3] || '') + '000000000').slice(0, 9);
    return { s: ms / 1000, frac: frac };
  }

  function compareValues(a, b) {
    if (a === b) return 0;
    var an = a === null || a === undefined, bn = b === null || b === undefined;
    if (an || bn) return an && bn ? 0 : an ? -1 : 1;
    var ta = typeof a, tb = typeof b;
    if (ta === 'number' && tb === 'number') return a < b ? -1 : a > b ? 1 : 0;
    if (ta === 'boolean' && tb === 'boolean') return a === b ? 0 : a ? 1 : -1;
    if (ta === 'string' && tb === 'string') {
      var ia = parseInstant(a), ib = ia && parseInstant(b);
      if (ia && ib) {
        if (ia.s !== ib.s) return ia.s < ib.s ? -1 : 1;
        return ia.frac < ib.frac ? -1 : ia.frac > ib.frac ? 1 : 0;
      }
      return compareCodePoints(a, b);
    }
    if (ta !== tb) return ta < tb ? -1 : 1;
    var ja = JSON.stringify(a), jb = JSON.stringify(b);
    return ja < jb ? -1 : ja > jb ? 1 : 0;
  }

  /**
   * Build a comparator from an order_by list (`['-done', 'position']`); ties break by `id`.
   * @param {string[]|string} [orderBy]
   * @param {string} [key='id']
   */
  function makeComparator(orderBy, key) {
    key = key || 'id';
    var spec = (Array.isArray(orderBy) ? orderBy : orderBy ? [orderBy] : []).map(function (f) {
      f = String(f);
      return f.charAt(0) === '-' ? { field: f.slice(1), dir: -1 } : { field: f, dir: 1 };
    });
    if (!spec.some(function (s) { return s.field === key; })) spec.push({ field: key, dir: 1 });
    return function (x, y) {
      for (var i = 0; i < spec.length; i++) {
        var c = compareValues(x[spec[i].field], y[spec[i].field]);
        if (c !== 0) return c * spec[i].dir;
      }
      return 0;
    };
  }

  function sortItems(items, orderBy, key) {
    return items.slice().sort(makeComparator(orderBy, key));
  }

  /**
   * Apply one event to a Map of objects keyed by id, idempotently. Returns true if the map
   * changed. `created`/`updated` upsert (an update merges over the previous state), `deleted`
   * removes; anything else is ignored.
   */
  function applyEvent(map, frame, key) {
    key = key || 'id';
    var data = frame && frame.data;
    if (!data || typeof data !== 'object' || data[key] === undefined) return false;
    var id = data[key];
    if (frame.event === 'created' || frame.event === 'updated') {
      var prev = map.get(id);
      var next = frame.event === 'updated' && prev ? Object.assign({}, prev, data) : Object.assign({}, data);
      if (prev && sameObject(prev, next)) return false;
      map.set(id, next);
      return true;
    }
    if (frame.event === 'deleted') return map.delete(id);
    return false;
  }

  // ---------------------------------------------------------------------------------------------
  // Change versions. `created`/`updated`/`deleted` events may carry a top-level integer
  // `version`: the change's sequence number in its route's log, so for one object a higher
  // version is always newer. Delivery is at least once (repeats after a failover) and, rarely,
  // an older version arrives after a newer one: live collections apply each version at most
  // once and never go back. Events without `version` are applied as they come.

  var MAX_TOMBSTONES = 10000;

  function isVersion(v) { return typeof v === 'number' && isFinite(v); }

  /**
   * The highest version seen per object id: for objects present (`live`) and for deleted ones
   * (`tombstones`, so a late older created/updated does not bring a deleted object back). At
   * most `max` tombstones are kept, the oldest dropped first; live entries are bounded by the
   * objects present.
   */
  class VersionBook {
    constructor(maxTombstones) {
      this.max = typeof maxTombstones === 'number' && maxTombstones >= 0 ? Math.floor(maxTombstones) : MAX_TOMBSTONES;
      this.live = new Map();
      this.tombstones = new Map();
    }

    /** the highest version held for id, or undefined */
    held(id) {
      var v = this.live.get(id);
      return v !== undefined ? v : this.tombstones.get(id);
    }

    /** true if an event of `version` for id was applied already or is older than what is held */
    stale(id, version) {
      if (!isVersion(version)) return false;
      var held = this.held(id);
      return held !== undefined && version <= held;
    }

    /** Note an event for id that was applied (call after stale() said no). */
    record(id, event, version) {
      var v = isVersion(version) ? version : this.held(id);
      if (event === 'deleted') {
        this.live.delete(id);
        if (v === undefined) return;
        this.tombstones.delete(id); // re-inserted: the newest tombstone
        this.tombstones.set(id, v);
        while (this.tombstones.size > this.max) this.tombstones.delete(this.tombstones.keys().next().value);
      } else if (event === 'created' || event === 'updated') {
        this.tombstones.delete(id);
        if (v !== undefined) this.live.set(id, v);
      }
    }

    clear() {
      this.live.clear();
      this.tombstones.clear();
    }
  }

  function sameObject(a, b) {
    var ka = Object.keys(a), kb = Object.keys(b);
    if (ka.length !== kb.length) return false;
    for (var i = 0; i < ka.length; i++) {
      if (!Object.prototype.hasOwnProperty.call(b, ka[i])) return false;
      if (JSON.stringify(a[ka[i]]) !== JSON.stringify(b[ka[i]])) return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // Subscription: the handle returned by client.subscribe()

  class Subscription {
    constructor(client, route, filter, onEvent, options) {
      this._client = client;
      this.route = route;
      this.filter = filter || {};
      this._onEvent = onEvent;
      this._options = options || {};
      /** current server-chosen subscription id (changes on reconnect) */
      this.id = null;
      /** last position seen (opaque) */
      this.position = null;
      /** snapshot rows of the latest (re)subscription made with snapshot: true */
      this.items = undefined;
      /** false after unsubscribe(), or once the server ended it (access revoked: see `error`) */
      this.active = true;
      /** why the server ended it (a DragonError, code `forbidden` when access was revoked), or null */
      this.error = null;
      this._established = false;
    }
    /** alias of `id` */
    get sub() { return this.id; }

    /** Stop receiving events. Resolves once the server confirmed (or at once if offline). */
    unsubscribe() {
      if (!this.active) return Promise.resolve();
      this.active = false;
      var client = this._client;
      client._subs.delete(this);
      var id = this.id;
      if (id !== null) client._subById.delete(id);
      this.id = null;
      if (id === null || !client._connected) return Promise.resolve();
      return client.call(this.route, 'unsubscribe', { sub: id }).then(
        function () {},
        function (err) { if (err && err.code !== 'not_found' && err.code !== 'disconnected') throw err; }
      );
    }

    /**
     * Drop the server subscription and subscribe again with a fresh snapshot (same handle, same
     * handler). Resolves to the snapshot rows. liveList uses this after a resync.
     */
    reload() {
      var self = this;
      var client = self._client;
      if (!self.active) return Promise.reject(self.error || new DragonError('bad_request', 'subscription is closed'));
      var old = self.id;
      if (old !== null) {
        client._subById.delete(old);
        self.id = null;
        if (client._connected) {
          client.call(self.route, 'unsubscribe', { sub: old }).catch(function () {});
        }
      }
      return client._establish(self, { snapshot: true }).then(function () { return self.items; });
    }

    _dispatch(frame) {
      if (!this.active) return;
      this._deliver(frame);
    }

    _deliver(frame) {
      if (this._onEvent) {
        var client = this._client;
        safeCall(this._onEvent, [frame, this], function (err) { client._emit('error', err); });
      }
    }

    /**
     * The server ended this subscription (access revoked): like unsubscribe() without telling
     * the server (it has dropped it already), so it is not re-established after a reconnect.
     */
    _end(err) {
      this.active = false;
      this.error = err;
      var client = this._client;
      client._subs.delete(this);
      if (this.id !== null && client._subById.get(this.id) === this) client._subById.delete(this.id);
      this.id = null;
      this._establishing = null;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Dragon: the connection

  class Dragon {
    /**
     * @param {object} [options]
     * @param {string} [options.url] WebSocket URL (default: this page's origin + /ws)
     * @param {string|Function} [options.token] auth token, sent as ?token=; or a function
     *   returning one (or a promise of one; null/undefined: anonymous), called before every
     *   (re)connection
     * @param {Function} [options.WebSocket] WebSocket constructor (node: require('ws'))
     * @param {number} [options.timeout=10000] default per-call timeout, ms
     * @param {object|Function} [options.backoff] {initial, max, factor, jitter, maxAttempts} or attempt => ms
     * @param {number} [options.heartbeat=25000] ping interval when idle, ms (0: off)
     * @param {boolean} [options.autoConnect=true]
     * @param {number} [options.maxInFlight=64] requests in flight at once (the server's limit)
     */
    constructor(options) {
      var o = options || {};
      this.url = resolveUrl(o.url);
      this.token = o.token;
      this.timeout = o.timeout != null ? o.timeout : 10000;
      this.backoff = o.backoff;
      this.maxAttempts = typeof o.backoff === 'object' && o.backoff && o.backoff.maxAttempts != null
        ? o.backoff.maxAttempts : (o.maxAttempts != null ? o.maxAttempts : Infinity);
      this.heartbeat = o.heartbeat != null ? o.heartbeat : 25000;
      this.maxInFlight = o.maxInFlight || 64;
      this._WebSocket = o.WebSocket || root.WebSocket;
      if (typeof this._WebSocket !== 'function') {
        throw new TypeError('dragon: no WebSocket implementation (pass options.WebSocket)');
      }
      /**
       * 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'. 'idle': not connected and
       * no reconnection under way; before the first connect() (autoConnect: false), or after
       * the server closed an idle connection (4009) until the client is needed again.
       */
      this.state = 'idle';
      /** connection id and user from the server's hello */
      this.conn = null;
      this.user = null;
      this.protocol = null;

      this._ws = null;
      this._connected = false;     // hello received on the current socket
      this._wanted = false;        // connect() called and not disconnect()
      this._attempt = 0;
      this._retryTimer = null;
      this._connectTimer = null;
      this._opening = null;        // a token function is being awaited: {timer} of this attempt
      this._idle = false;          // closed by the server as idle (4009): reconnect once needed
      this._idleHooks = null;      // [target, event, listener] installed while idle (page wake-ups)
      this._heartbeatTimer = null;
      this._nextId = 1;
      this._pending = new Map();   // id -> request entry (sent, awaiting reply)
      this._queue = [];            // request entries not sent yet
      this._inFlight = 0;
      this._listeners = new Map();
      this._channel = new Set();
      this._subs = new Set();      // live Subscription handles
      this._subById = new Map();   // server sub id -> Subscription
      this._presence = new Map();  // route + key -> PresenceKey (shared by the handles of one key)
      this._epoch = 0;             // counts hellos: which connection a presence state belongs to
      this._readyWaiters = [];
      this._everReady = false;
      this._lastRx = 0;

      var self = this;
      // Back online (browser): retry at once instead of waiting for the backoff timer.
      this._onOnline = function () { if (self._wanted && !self._idle && !self._ws && !self._opening) self._openSocket(); };
      this._onlineHooked = false;
      // Idle (4009): the page coming back into view or getting the focus wakes the client.
      this._onVisibility = function () {
        var doc = root.document;
        if (!doc) return;
        var visible = doc.visibilityState !== undefined ? doc.visibilityState === 'visible' : !doc.hidden;
        if (visible) self._wake();
      };
      this._onFocus = function () { self._wake(); };

      if (o.autoConnect !== false) this.connect();
    }

    // ---- events ----

    /**
     * Listen to 'open' ({conn, user, reconnect}) | 'close' ({code, reason, wasClean}) |
     * 'reconnecting' ({attempt, delay}) | 'error' (DragonError) | 'resync' ({route, subs,
     * reason, subscription}) | 'state' ('connecting'|'open'|'reconnecting'|'idle'|'closed').
     * Returns off().
     */
    on(name, cb) { return addListener(this._listeners, name, cb); }

    _emit(name, payload) {
      var set = this._listeners.get(name);
      if (!set || set.size === 0) {
        // Socket errors are expected while reconnecting; only report other unheard errors.
        if (name === 'error' && payload && payload.code !== 'disconnected' && typeof console !== 'undefined') console.warn('dragon:', payload);
        return;
      }
      Array.from(set).forEach(function (cb) { safeCall(cb, [payload]); });
    }

    /** Called with every event frame the server sends (hello, created, presence, resync, ...). */
    onChannelMessage(cb) {
      if (typeof cb !== 'function') throw new TypeError('callback must be a function');
      var set = this._channel;
      set.add(cb);
      return function off() { set.delete(cb); };
    }

    /** Resolves once connected (hello received); immediately if already connected. */
    ready() {
      if (this._connected) return Promise.resolve(this);
      var self = this;
      return new Promise(function (resolve) { self._readyWaiters.push(resolve); });
    }

    /**
     * Run cb once, as soon as the client is connected (at once, asynchronously, if it already
     * is). For every (re)connection use on('open', cb). Returns a function that cancels it.
     */
    onReady(cb) {
      var cancelled = false;
      var self = this;
      this.ready().then(function () { if (!cancelled) safeCall(cb, [self]); });
      return function () { cancelled = true; };
    }

    get connected() { return this._connected; }

    // ---- connection lifecycle ----

    connect() {
      this._wanted = true;
      if (!this._onlineHooked && root.addEventListener && root.window === root) {
        root.addEventListener('online', this._onOnline);
        this._onlineHooked = true;
      }
      if (this._ws || this._retryTimer || this._opening) return this.ready();
      this._attempt = 0;
      this._openSocket();
      return this.ready();
    }

    /** Close for good: no reconnection; pending and queued calls reject with `disconnected`. */
    disconnect() {
      this._wanted = false;
      this._leaveIdle();
      clearTimeout(this._retryTimer); this._retryTimer = null;
      this._cancelOpening();
      var ws = this._ws;
      this._teardownSocket();
      if (ws) {
        try { ws.close(1000, 'client disconnect'); } catch (e) { /* ignore */ }
      }
      this._failAll(new DragonError('disconnected', 'disconnected by the client'), true);
      var gone = new DragonError('disconnected', 'disconnected by the client');
      this._presence.forEach(function (k) { k._failWaiters(gone); });
      if (this._onlineHooked) { root.removeEventListener('online', this._onOnline); this._onlineHooked = false; }
      var was = this.state;
      this._setState('closed');
      if (ws && was !== 'closed') this._emit('close', { code: 1000, reason: 'client disconnect', wasClean: true });
    }

    _setState(s) {
      if (this.state === s) return;
      this.state = s;
      this._emit('state', s);
    }

    _openSocket() {
      var self = this;
      this._leaveIdle();
      clearTimeout(this._retryTimer); this._retryTimer = null;
      this._cancelOpening();
      this._setState(this._everReady ? 'reconnecting' : 'connecting');
      var token = this.token;
      if (typeof token === 'function') {
        // Ask the app for the current token (it may refresh an expired one). A throw, a
        // rejection or no answer within the timeout is a failed attempt: backoff and retry.
        try {
          token = token.call(null);
        } catch (err) {
          this._tokenFailed(err);
          return;
        }
        if (token && typeof token.then === 'function') {
          var opening = { timer: null };
          this._opening = opening;
          var wait = Math.max(this.timeout, 1000);
          opening.timer = setTimeout(function () {
            if (self._opening !== opening) return;
            self._opening = null;
            self._tokenFailed(new DragonError('timeout', 'the token function did not settle within ' + wait + ' ms'));
          }, wait);
          Promise.resolve(token).then(function (t) {
            if (self._opening !== opening) return; // cancelled (disconnect) or timed out
            self._cancelOpening();
            if (self._wanted) self._openSocketWith(t);
          }, function (err) {
            if (self._opening !== opening) return;
            self._cancelOpening();
            self._tokenFailed(err);
          });
          return;
        }
      }
      this._openSocketWith(token);
    }

    _cancelOpening() {
      if (!this._opening) return;
      clearTimeout(this._opening.timer);
      this._opening = null;
    }

    /** The token function threw or rejected: report it and count it as a failed attempt. */
    _tokenFailed(err) {
      if (!this._wanted) return;
      this._emit('error', err === undefined || err === null ? new DragonError('unauthenticated', 'the token function failed') : err);
      this._scheduleReconnect();
    }

    _openSocketWith(token) {
      var self = this;
      var ws;
      try {
        ws = new this._WebSocket(withToken(this.url, token));
      } catch (err) {
        this._emit('error', err);
        this._scheduleReconnect();
        return;
      }
      this._ws = ws;
      this._connected = false;
      this._connectTimer = setTimeout(function () {
        if (self._ws === ws && !self._connected) {
          try { ws.close(); } catch (e) { /* ignore */ }
          self._onSocketClosed(ws, { code: 4000, reason: 'connect timeout', wasClean: false });
        }
      }, Math.max(this.timeout, 1000));
      ws.onopen = function () { self._lastRx = Date.now(); };
      ws.onmessage = function (ev) { if (self._ws === ws) self._onMessage(ev.data); };
      ws.onerror = function (ev) {
        if (self._ws !== ws) return;
        self._emit('error', new DragonError('disconnected', 'WebSocket error' + (ev && ev.message ? ': ' + ev.message : '')));
      };
      ws.onclose = function (ev) {
        self._onSocketClosed(ws, { code: ev && ev.code, reason: ev && ev.reason, wasClean: ev && ev.wasClean });
      };
    }

    _teardownSocket() {
      var ws = this._ws;
      this._ws = null;
      this._connected = false;
      clearTimeout(this._connectTimer); this._connectTimer = null;
      clearInterval(this._heartbeatTimer); this._heartbeatTimer = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = null;
        // Keep an error listener: node's `ws` throws on an 'error' event nobody listens to
        // (e.g. closing a socket that is still connecting).
        ws.onerror = function () {};
      }
      this._inFlight = 0;
      // Server subscription ids die with the socket.
      this._subById.clear();
      this._subs.forEach(function (s) { s.id = null; s._established = false; });
      // Presence memberships and watches die with the socket too (the server publishes the leaves).
      Array.from(this._presence.values()).forEach(function (k) { k._dropped(); });
    }

    _onSocketClosed(ws, info) {
      if (this._ws !== ws) return;
      var wasConnected = this._connected;
      this._teardownSocket();
      // Requests on the wire: re-queue reads, reject writes (they may have been applied).
      var self = this;
      var requeue = [];
      this._pending.forEach(function (entry) {
        if (entry.retry && !entry.done) requeue.push(entry);
        else self._settle(entry, new DragonError('disconnected', 'connection lost before the reply'));
      });
      this._pending.clear();
      requeue.sort(function (a, b) { return a.seq - b.seq; });
      this._queue = requeue.concat(this._queue);

      var code = info.code;
      if (wasConnected) this._emit('close', info);
      if (!this._wanted) { this._setState('closed'); return; }
      // 4003 (token expired): with a token function, reconnect through the normal backoff; the
      // function is called again before the new socket and gives a fresh token. With a fixed
      // token the same token would only be refused again: final, like 4001.
      if (code === 4001 || code === 1008 || (code === 4003 && typeof this.token !== 'function')) {
        this._wanted = false;
        var err = code === 4001
          ? new DragonError('unauthenticated', 'authentication required (close 4001)')
          : code === 4003
            ? new DragonError('token_expired', 'token expired (close 4003)')
            : new DragonError('forbidden', 'connection refused by policy (close 1008)');
        this._emit('error', err);
        this._failAll(err, true);
        this._setState('closed');
        return;
      }
      // 4009 (idle): the server closed a connection that sent no request for its idle timeout.
      // Stay away until the client is needed again (a call, connect(), reconnectNow(), the page
      // shown or focused). A read that was on the wire (the close crossed it) or a call queued
      // meanwhile needs the server now: reconnect like after any drop.
      if (code === 4009 && !this._needsServer()) {
        this._enterIdle();
        return;
      }
      // Everything else is retried with backoff, 1013 ("try again later": the server's
      // authentication backend failed, the token itself may be fine) included. It comes before
      // the hello, so the attempts keep counting and the delay keeps growing.
      this._scheduleReconnect();
    }

    _scheduleReconnect() {
      var self = this;
      if (!this._wanted) return;
      if (this._attempt >= this.maxAttempts) {
        this._wanted = false;
        this._failAll(new DragonError('disconnected', 'gave up reconnecting'), true);
        this._setState('closed');
        return;
      }
      var delay = backoffDelay(this.backoff, this._attempt);
      this._attempt++;
      this._setState('reconnecting');
      this._emit('reconnecting', { attempt: this._attempt, delay: delay });
      this._retryTimer = setTimeout(function () { self._retryTimer = null; if (self._wanted) self._openSocket(); }, delay);
    }

    /**
     * Reconnect now instead of waiting for the backoff timer (e.g. on a user's "retry" click),
     * or, when idle (closed with 4009), reconnect now.
     */
    reconnectNow() {
      if (!this._wanted) return this.connect();
      if (this._retryTimer) { clearTimeout(this._retryTimer); this._retryTimer = null; this._openSocket(); }
      else if (this._idle) this._wake();
      return this.ready();
    }

    /** Whether something waits for the server: a queued call, or a presence join or update. */
    _needsServer() {
      if (this._queue.some(function (e) { return !e.done; })) return true;
      var waiting = false;
      this._presence.forEach(function (k) {
        k.handles().forEach(function (h) {
          if (!h.closed && (!h._readySettled || h._updates.length)) waiting = true;
        });
      });
      return waiting;
    }

    /** Closed as idle (4009): no reconnection until _wake() (a call, the page shown, ...). */
    _enterIdle() {
      this._idle = true;
      this._attempt = 0;
      this._setState('idle');
      this._hookIdleWake();
    }

    _leaveIdle() {
      if (!this._idle && !this._idleHooks) return;
      this._idle = false;
      this._unhookIdleWake();
    }

    /** Reconnect if idle (4009); otherwise nothing (connected, or a reconnection under way). */
    _wake() {
      if (!this._idle || !this._wanted || this._ws || this._opening || this._retryTimer) return;
      this._attempt = 0;
      this._openSocket();
    }

    /** While idle, in a browser: the page becoming visible or getting the focus wakes the client. */
    _hookIdleWake() {
      if (this._idleHooks) return;
      var hooks = [];
      var doc = root.document;
      if (doc && typeof doc.addEventListener === 'function') {
        doc.addEventListener('visibilitychange', this._onVisibility);
        hooks.push([doc, 'visibilitychange', this._onVisibility]);
      }
      if (typeof root.addEventListener === 'function' && root.window === root) {
        root.addEventListener('focus', this._onFocus);
        hooks.push([root, 'focus', this._onFocus]);
      }
      this._idleHooks = hooks;
    }

    _unhookIdleWake() {
      var hooks = this._idleHooks;
      this._idleHooks = null;
      if (!hooks) return;
      hooks.forEach(function (h) {
        try { h[0].removeEventListener(h[1], h[2]); } catch (e) { /* ignore */ }
      });
    }

    _onHello(frame) {
      var d = frame.data || {};
      this.conn = d.conn != null ? d.conn : null;
      this.user = d.user !== undefined ? d.user : null;
      this.protocol = d.protocol != null ? d.protocol : null;
      if (this.protocol != null && this.protocol !== PROTOCOL_VERSION) {
        this._emit('error', new DragonError('bad_request', 'server speaks protocol ' + this.protocol + ', client ' + PROTOCOL_VERSION));
      }
      if (this._connected) return;
      clearTimeout(this._connectTimer); this._connectTimer = null;
      this._connected = true;
      var reconnect = this._everReady;
      this._everReady = true;
      this._attempt = 0;
      this._setState('open');
      this._startHeartbeat();
      // Re-establish subscriptions first (with `since`), then flush the queue.
      var self = this;
      this._subs.forEach(function (s) { if (s.active && !s._establishing) self._resume(s, 0); });
      // Join and watch presence again, each handle with its latest state.
      this._epoch++;
      Array.from(this._presence.values()).forEach(function (k) { k.attempt = 0; k.sync(); });
      this._flush();
      this._emit('open', { conn: this.conn, user: this.user, reconnect: reconnect });
      var waiters = this._readyWaiters;
      this._readyWaiters = [];
      waiters.forEach(function (w) { w(self); });
    }

    _startHeartbeat() {
      var self = this;
      clearInterval(this._heartbeatTimer);
      if (!this.heartbeat) return;
      var ws = this._ws;
      this._heartbeatTimer = setInterval(function () {
        if (self._ws !== ws || !self._connected) return;
        if (Date.now() - self._lastRx < self.heartbeat) return;
        self._request('dragon', 'ping', {}, { timeout: self.timeout, retry: false, noQueue: true }).catch(function (err) {
          if (err.code === 'timeout' && self._ws === ws) {
            try { ws.close(4000, 'heartbeat timeout'); } catch (e) { /* ignore */ }
            self._onSocketClosed(ws, { code: 4000, reason: 'heartbeat timeout', wasClean: false });
          }
        });
      }, Math.max(1000, Math.floor(this.heartbeat / 2)));
      if (this._heartbeatTimer && this._heartbeatTimer.unref) this._heartbeatTimer.unref();
    }

    // ---- inbound frames ----

    _onMessage(raw) {
      this._lastRx = Date.now();
      if (typeof raw !== 'string') {
        if (raw && typeof raw.toString === 'function') raw = raw.toString();
        else return;
      }
      var frame;
      try { frame = JSON.parse(raw); } catch (e) {
        this._emit('error', new DragonError('bad_request', 'server sent invalid JSON'));
        return;
      }
      if (!frame || typeof frame !== 'object') return;
      if (Object.prototype.hasOwnProperty.call(frame, 'id') && frame.event === undefined) {
        this._onReply(frame);
      } else if (typeof frame.event === 'string') {
        this._onEvent(frame);
      }
    }

    _onReply(frame) {
      var entry = frame.id === null ? undefined : this._pending.get(frame.id);
      if (!entry) {
        if (frame.id === null && frame.ok === false) this._emit('error', DragonError.from(frame.error));
        var late = this._late && this._late.get(frame.id);
        if (late) { this._late.delete(frame.id); late(frame); }
        return;
      }
      this._pending.delete(frame.id);
      this._inFlight = Math.max(0, this._inFlight - 1);
      if (frame.ok === false || frame.error) {
        this._settle(entry, DragonError.from(frame.error));
      } else {
        if (entry.onReply) {
          try { entry.onReply(frame); } catch (err) { this._settle(entry, err); this._flush(); return; }
        }
        this._settle(entry, null, { data: frame.data, meta: frame.meta });
      }
      this._flush();
    }

    _onEvent(frame) {
      var self = this;
      this._channel.forEach(function (cb) { safeCall(cb, [frame], function (err) { self._emit('error', err); }); });
      if (frame.event === 'hello') { this._onHello(frame); return; }
      if (frame.event === 'presence') {
        var pk = this._presence.get(presenceKeyId(frame.route, frame.key));
        if (pk) pk._onEvent(frame);
        return;
      }
      var subs = Array.isArray(frame.subs) ? frame.subs : [];
      if (frame.event === 'error') { this._onEnded(frame, subs); return; }
      if (frame.event === 'resync') {
        subs.forEach(function (id) {
          var s = self._subById.get(id);
          if (!s) return;
          self._resync(s, 'server');
        });
        return;
      }
      subs.forEach(function (id) {
        var s = self._subById.get(id);
        if (!s || !s.active) return;
        if (frame.position !== undefined && frame.position !== null) s.position = frame.position;
        s._dispatch(frame);
      });
    }

    /**
     * An `error` event frame: the server ended the listed subscriptions (access revoked) and
     * dropped the connection's user. End them here too (no resubscribe after reconnecting),
     * hand the frame (plus `error`) to their handlers, and emit 'error'.
     */
    _onEnded(frame, subs) {
      var self = this;
      var err = DragonError.from(frame.data && typeof frame.data === 'object' && frame.data.code
        ? frame.data : { code: 'forbidden', message: 'subscription ended by the server' });
      var ended = [];
      subs.forEach(function (id) {
        var s = self._subById.get(id);
        if (!s || !s.active || ended.indexOf(s) >= 0) return;
        s._end(err);
        ended.push(s);
      });
      // A user or connection revocation drops the user; one object's does not.
      if (!(frame.data && frame.data.revoked === 'object')) this.user = null;
      err.route = frame.route;
      err.subs = subs.slice();
      err.subscriptions = ended;
      var delivered = Object.assign({}, frame, { error: err });
      ended.forEach(function (s) { s._deliver(delivered); });
      this._emit('error', err);
    }

    _resync(sub, reason) {
      var info = { event: 'resync', route: sub.route, subs: sub.id === null ? [] : [sub.id], reason: reason, subscription: sub };
      this._emit('resync', info);
      sub._dispatch({ event: 'resync', route: sub.route, subs: info.subs, reason: reason });
    }

    // ---- outbound requests ----

    _request(route, verb, args, opts) {
      var self = this;
      opts = opts || {};
      if (typeof route !== 'string' || !route) return Promise.reject(new TypeError('route must be a non-empty string'));
      if (typeof verb !== 'string' || !verb) return Promise.reject(new TypeError('verb must be a non-empty string'));
      return new Promise(function (resolve, reject) {
        var entry = {
          seq: self._nextId++,
          id: null,
          route: route,
          verb: verb,
          args: args || {},
          resolve: resolve,
          reject: reject,
          done: false,
          onReply: opts.onReply,
          retry: opts.retry !== undefined ? opts.retry : !!RETRYABLE_VERBS[verb],
          timer: null
        };
        var timeout = opts.timeout != null ? opts.timeout : self.timeout;
        if (timeout > 0 && isFinite(timeout)) {
          entry.timer = setTimeout(function () {
            if (entry.done) return;
            var onWire = entry.id !== null && self._pending.get(entry.id) === entry;
            if (onWire) {
              self._pending.delete(entry.id);
              self._inFlight = Math.max(0, self._inFlight - 1);
              if (entry.onLate) {
                if (!self._late) self._late = new Map();
                self._late.set(entry.id, entry.onLate);
              }
            }
            var qi = self._queue.indexOf(entry);
            if (qi >= 0) self._queue.splice(qi, 1);
            self._settle(entry, new DragonError('timeout', route + '.' + verb + ' got no reply within ' + timeout + ' ms'));
            self._flush();
          }, timeout);
        }
        entry.onLate = opts.onLate;
        // Bound to the current connection: never sent on a later one (presence re-sends its own).
        if (opts.sameConnection) entry.epoch = self._connected ? self._epoch : -1;
        if (!self._wanted && !opts.noQueue) {
          self._settle(entry, new DragonError('disconnected', 'the client is disconnected (call connect())'));
          return;
        }
        self._queue.push(entry);
        // Idle (closed with 4009): a call means the server is needed again.
        if (self._idle) self._wake();
        self._flush();
      });
    }

    _flush() {
      if (!this._connected || !this._ws) return;
      while (this._queue.length && this._inFlight < this.maxInFlight) {
        var entry = this._queue.shift();
        if (entry.done) continue;
        if (entry.epoch !== undefined && entry.epoch !== this._epoch) {
          this._settle(entry, new DragonError('disconnected', 'the connection it was meant for is gone'));
          continue;
        }
        entry.id = this._nextId++;
        var frame = { id: entry.id, route: entry.route, verb: entry.verb, args: entry.args };
        var text;
        try { text = JSON.stringify(frame); } catch (err) { this._settle(entry, err); continue; }
        this._pending.set(entry.id, entry);
        this._inFlight++;
        try {
          this._ws.send(text);
        } catch (err) {
          this._pending.delete(entry.id);
          this._inFlight--;
          this._settle(entry, new DragonError('disconnected', 'send failed: ' + (err && err.message)));
        }
      }
    }

    _settle(entry, err, value) {
      if (entry.done) return;
      entry.done = true;
      clearTimeout(entry.timer);
      if (err) entry.reject(err); else entry.resolve(value);
    }

    _failAll(err, includeQueue) {
      var self = this;
      this._pending.forEach(function (e) { self._settle(e, err); });
      this._pending.clear();
      this._inFlight = 0;
      if (includeQueue) {
        var q = this._queue;
        this._queue = [];
        q.forEach(function (e) { self._settle(e, err); });
        // ready() waiters stay pending: they resolve if connect() is called again.
      }
    }

    // ---- public API: generic ----

    /** Generic call; resolves the reply's `data`. */
    call(route, verb, args, options) {
      return this._request(route, verb, args, options).then(function (r) { return r.data; });
    }

    /** Generic call; resolves `{data, meta}` (meta is undefined when the verb has none). */
    request(route, verb, args, options) {
      return this._request(route, verb, args, options);
    }

    // ---- public API: model routers ----

    /** Resolves `{items, meta}`; meta = {page, per_page, total, pages, position}. */
    getList(route, filter, options) {
      var o = options || {};
      var args = {};
      if (filter != null) args.filter = filter;
      if (o.order_by != null) args.order_by = Array.isArray(o.order_by) ? o.order_by : [o.order_by];
      if (o.page != null) args.page = o.page;
      if (o.per_page != null) args.per_page = o.per_page;
      return this._request(route, 'get_list', args, o).then(function (r) {
        return { items: r.data, meta: r.meta };
      });
    }

    getSingle(route, id, options) { return this.call(route, 'get_single', { id: id }, options); }
    create(route, data, options) { return this.call(route, 'create', { data: data || {} }, options); }
    update(route, id, data, options) { return this.call(route, 'update', { id: id, data: data || {} }, options); }
    delete(route, id, options) { return this.call(route, 'delete', { id: id }, options); }

    /**
     * Subscribe to a route's events. onEvent(frame, subscription) gets every event frame that
     * concerns it (created/updated/deleted/custom), plus {event:'resync',...} when the client
     * must reload. Frames are passed as sent (`version` included, repeats not filtered).
     * Resolves to the Subscription (with .id, .position and, with snapshot: true, .items).
     * options: {snapshot, timeout, onSubscribed(reply)}.
     */
    subscribe(route, filter, onEvent, options) {
      if (typeof filter === 'function' && options === undefined) { options = onEvent; onEvent = filter; filter = {}; }
      var sub = new Subscription(this, route, filter, onEvent, options);
      this._subs.add(sub);
      var self = this;
      return this._establish(sub, { snapshot: !!(options && options.snapshot), timeout: options && options.timeout })
        .then(function () { return sub; }, function (err) {
          sub.active = false;
          self._subs.delete(sub);
          throw err;
        });
    }

    /**
     * Re-establish `sub` after a reconnection (with `since`). Transient failures (timeout,
     * unavailable, internal, rate_limited) are retried with backoff on the same connection;
     * other refusals are reported as 'error' and to the handler as {event: 'error', error}.
     */
    _resume(sub, attempt) {
      var self = this;
      var ws = this._ws;
      this._establish(sub, { resume: true }).catch(function (err) {
        if (!sub.active || self._ws !== ws || !self._connected) return; // a new connection resumes it
        var transient = { timeout: 1, unavailable: 1, internal: 1, rate_limited: 1 };
        if (transient[err.code]) {
          setTimeout(function () {
            if (sub.active && self._ws === ws && self._connected && sub.id === null && !sub._establishing) self._resume(sub, attempt + 1);
          }, backoffDelay(self.backoff, attempt));
        } else {
          err.subscription = sub;
          self._emit('error', err);
          sub._dispatch({ event: 'error', route: sub.route, subs: [], error: err });
        }
      });
    }

    /** Send a subscribe for `sub` (initial, resume after reconnect, or reload with snapshot). */
    _establish(sub, how) {
      var self = this;
      var args = {};
      if (sub.filter && Object.keys(sub.filter).length) args.filter = sub.filter;
      var resume = how.resume && sub.position !== null;
      if (resume) args.since = sub.position;
      if (how.snapshot) args.snapshot = true;
      var token = {};
      sub._establishing = token;
      return this._request(sub.route, 'subscribe', args, {
        timeout: how.timeout,
        onReply: function (frame) {
          if (sub._establishing === token) sub._establishing = null;
          var d = frame.data || {};
          if (!sub.active) {
            // Unsubscribed while the request was in flight.
            if (d.sub != null) self.call(sub.route, 'unsubscribe', { sub: d.sub }).catch(function () {});
            return;
          }
          if (sub.id !== null && sub.id !== d.sub) self._subById.delete(sub.id);
          sub.id = d.sub;
          sub._established = true;
          self._subById.set(d.sub, sub);
          var recovered = resume ? d.recovered === true : undefined;
          if (!resume || !recovered) {
            if (d.position !== undefined) sub.position = d.position;
          }
          if (how.snapshot) sub.items = Array.isArray(d.items) ? d.items : [];
          if (sub._options.onSubscribed) {
            safeCall(sub._options.onSubscribed, [{ sub: d.sub, position: d.position, recovered: recovered, items: d.items, resumed: !!resume }, sub]);
          }
          if (resume && !recovered) self._resync(sub, 'not_recovered');
        },
        onLate: function (frame) {
          // The subscribe timed out but the server did subscribe: undo it.
          if (frame.ok && frame.data && frame.data.sub != null && self._connected) {
            self.call(sub.route, 'unsubscribe', { sub: frame.data.sub }).catch(function () {});
          }
        }
      }).then(function () { return sub; }, function (err) {
        if (sub._establishing === token) sub._establishing = null;
        throw err;
      });
    }

    /** A LiveList bound to this client. */
    liveList(route, filter, options) { return liveList(this, route, filter, options); }

    // ---- public API: presence ----

    /**
     * Join presence on `key` (an object id or a free string) of `route` with `state` (an
     * object, default {}). Returns a Presence handle at once: it joins as soon as connected,
     * joins again with its latest state after every reconnection, and keeps `members` current.
     * options: {timeout} (for `ready`).
     */
    presence(route, key, state, options) {
      return openPresence(this, 'join', route, key, state === undefined || state === null ? {} : state, options || {});
    }

    /**
     * Watch presence on `key` without joining. With {count: true} only the number of members
     * is followed (`count`, onChange(count)). options: {count, timeout}.
     */
    watchPresence(route, key, options) {
      var o = options || {};
      return openPresence(this, o.count ? 'count' : 'watch', route, key, undefined, o);
    }

    // ---- public API: connection-level route ----

    ping(options) { return this.call('dragon', 'ping', {}, options); }
    whoami(options) { return this.call('dragon', 'whoami', {}, options); }
    /**
     * Authenticate this connection (or renew its token before it expires); the token is also
     * used for reconnections. It replaces the `token` option, a token function included: later
     * reconnections use this string and no longer call the function.
     */
    auth(token, options) {
      var self = this;
      return this.call('dragon', 'auth', { token: token }, options).then(function (user) {
        self.token = token;
        self.user = user;
        return user;
      });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Presence (protocol section 7): who else is here, live.
  //
  // One PresenceKey per (route, key) and client holds what the server has for this connection
  // (joined, watching members, watching the count) and the member list; the Presence handles
  // the page holds are views on it. So two handles on one key share one membership and one
  // stream of events, and leaving one does not end the other. Requests for one key go out one
  // at a time; state updates made meanwhile are folded into the next request (the latest state
  // wins, as the server would coalesce them anyway).

  var PRESENCE_VERBS_TRANSIENT = { timeout: 1, unavailable: 1, internal: 1, rate_limited: 1 };

  /** JSON with object keys sorted, so equal values give equal strings. */
  function stableStringify(v) {
    if (v === undefined) return 'null';
    if (v === null || typeof v !== 'object') return JSON.stringify(v);
    if (Array.isArray(v)) return '[' + v.map(stableStringify).join(',') + ']';
    return '{' + Object.keys(v).sort().filter(function (k) { return v[k] !== undefined; }).map(function (k) {
      return JSON.stringify(k) + ':' + stableStringify(v[k]);
    }).join(',') + '}';
  }

  function presenceKeyId(route, key) { return String(route) + '\n' + stableStringify(key); }

  function isPlainObject(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }

  function sameMember(a, b) {
    return a.conn === b.conn && stableStringify(a.user) === stableStringify(b.user) &&
      stableStringify(a.state) === stableStringify(b.state);
  }

  /**
   * Group presence members so that several connections (tabs) of one user show once: by
   * `user.id` when the user is an object with an id, else by the user's JSON; members whose
   * user is null are each their own group. `keyOf(member)`, if given, replaces the user as the
   * grouping key (null/undefined: a group of its own). Groups keep the members' order.
   * @returns {{user: *, members: object[], states: object[]}[]}
   */
  function groupByUser(members, keyOf) {
    var groups = [];
    var index = new Map();
    (members || []).forEach(function (m) {
      var k;
      if (typeof keyOf === 'function') {
        var own = keyOf(m);
        k = own === undefined || own === null ? '\u0000conn:' + m.conn : 'key:' + stableStringify(own);
      } else {
        var u = m.user;
        if (u === null || u === undefined) k = '\u0000conn:' + m.conn;
        else if (isPlainObject(u) && u.id !== undefined && u.id !== null) k = 'id:' + stableStringify(u.id);
        else k = 'user:' + stableStringify(u);
      }
      var g = index.get(k);
      if (!g) {
        g = { user: m.user === undefined ? null : m.user, members: [], states: [] };
        index.set(k, g);
        groups.push(g);
      }
      g.members.push(m);
      g.states.push(m.state);
    });
    return groups;
  }

  class PresenceKey {
    constructor(client, route, key, id) {
      this.client = client;
      this.route = route;
      this.key = key;
      this.id = id;
      this.joiner = null;          // the one join handle of this key, or null
      this.watchers = new Set();   // watch handles ('watch' and 'count')
      this.members = new Map();    // conn -> member, in the server's order then arrival order
      this.list = [];              // Array.from(members.values()), rebuilt on change
      this.count = null;           // from count replies and events
      this.mode = null;            // what the server holds for connection `epoch`: null | 'count' | 'members' | 'joined'
      this.joinedBy = null;        // the handle whose join the server holds
      this.epoch = -1;
      this.loaded = false;         // members/count come from the current connection
      this.op = null;              // the request in flight
      this.attempt = 0;
      this.retryTimer = null;
      this.leaves = [];            // leave() calls waiting: {handle, resolve}
    }

    handles() {
      var out = [];
      if (this.joiner) out.push(this.joiner);
      this.watchers.forEach(function (h) { out.push(h); });
      return out;
    }

    /** What the server holds for this key on the current connection. */
    held() {
      var c = this.client;
      return c._connected && this.epoch === c._epoch ? this.mode : null;
    }

    wanted() {
      if (this.joiner) return 'joined';
      var members = false, count = false;
      this.watchers.forEach(function (h) { if (h.kind === 'count') count = true; else members = true; });
      return members ? 'members' : count ? 'count' : null;
    }

    /** Send whatever brings the server to what the handles want; one request at a time. */
    sync() {
      if (this.op || this.retryTimer) return;
      var c = this.client;
      if (!c._connected) { this._settleLeaves(); this._disposeIfUnused(); return; }
      var have = this.held();
      var want = this.wanted();
      this._settleLeaves();
      if (want === null) {
        if (have === null) { this._disposeIfUnused(); return; }
        this._send('presence_leave', { key: this.key }, {});
        return;
      }
      if (want === 'joined') {
        var j = this.joiner;
        if (have !== 'joined' || this.joinedBy !== j) {
          this._send('presence_join', { key: this.key, state: j.state }, { handle: j, version: j._version, state: j.state });
        } else if (j._applied < j._version) {
          this._send('presence_update', { key: this.key, state: j.state }, { handle: j, version: j._version, state: j.state });
        }
        return;
      }
      // only watchers left: a membership this connection still holds must end first
      if (have === 'joined') { this._send('presence_leave', { key: this.key }, {}); return; }
      if (want === 'members' && have !== 'members') {
        this._send('presence_watch', { key: this.key }, { count: false });
      } else if (want === 'count' && have !== 'count') {
        this._send('presence_watch', { key: this.key, count: true }, { count: true });
      }
    }

    _send(verb, args, op) {
      var self = this;
      var c = this.client;
      op.verb = verb;
      op.epoch = c._epoch;
      this.op = op;
      c._request(this.route, verb, args, {
        retry: false,
        sameConnection: true,
        // Applied synchronously, before any event that follows the reply on the wire.
        onReply: function (frame) { if (self.op === op) self._onReply(op, frame.data); }
      }).then(function () {
        if (self.op !== op) return;
        self.op = null;
        self.attempt = 0;
        self.sync();
      }, function (err) {
        if (self.op !== op) return;
        self.op = null;
        self._onError(op, err);
      });
    }

    _onReply(op, data) {
      var c = this.client;
      this.epoch = c._epoch;
      data = data || {};
      if (op.verb === 'presence_leave') {
        this.mode = null;
        this.joinedBy = null;
        this.loaded = false;
        return;
      }
      if (op.verb === 'presence_watch') {
        this.mode = op.count && !Array.isArray(data.members) ? 'count' : 'members';
      } else {
        this.mode = 'joined';
        this.joinedBy = op.handle;
        var h = op.handle;
        if (op.version > h._applied) { h._applied = op.version; h._accepted = op.state; }
        if (h._applied === h._version) h.error = null;
      }
      this.watchers.forEach(function (w) { w.error = null; });
      if (Array.isArray(data.members)) this._baseline(data.members);
      else if (typeof data.count === 'number') this._setCount(data.count, true);
      if (op.handle) op.handle._resolveUpdates(op.handle._applied);
      this.handles().forEach(function (h) { h._onLoaded(op); });
    }

    _onError(op, err) {
      var c = this.client;
      if (!err || err.code === 'disconnected' || op.epoch !== c._epoch || !c._connected) return; // the reconnection re-sends
      var self = this;
      if (PRESENCE_VERBS_TRANSIENT[err.code]) {
        // Retry on this connection with backoff; ready() reports the first failure.
        this.handles().forEach(function (h) { h.error = err; h._failReady(err); });
        this.retryTimer = setTimeout(function () {
          self.retryTimer = null;
          if (c._epoch === op.epoch) self.sync();
        }, backoffDelay(c.backoff, this.attempt++));
        return;
      }
      if (op.verb === 'presence_leave') {
        // Not expected (leave is idempotent); count the key as left.
        this.mode = null;
        this.joinedBy = null;
        this.sync();
        return;
      }
      var h = op.handle;
      if (op.verb === 'presence_update' && err.code === 'bad_request') {
        // The server does not hold our membership (the state itself is checked before sending): join again.
        this.mode = null;
        this.joinedBy = null;
        this.sync();
        return;
      }
      if (h && h === this.joiner && (err.code === 'validation' || err.code === 'bad_request') &&
          h._applied > 0 && op.version > h._applied) {
        // A new state was refused (too large, ...): keep the last accepted one, reject the update.
        if (h._version === op.version) { h.state = h._accepted; h._version = h._applied; }
        h._rejectUpdates(function (v) { return v > h._applied && v <= op.version; }, err);
        this.sync();
        return;
      }
      // Refused for good (unknown_verb, not_found, forbidden, ...): the handles concerned close.
      var concerned = op.verb === 'presence_watch' ? Array.from(this.watchers) : (h && h === this.joiner ? [h] : []);
      concerned.forEach(function (x) { x._fail(err); });
      this.sync();
    }

    _dropped() {
      // The socket is gone: so is everything the server held for it.
      this.op = null;
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.loaded = false;
      this.mode = null;
      this.joinedBy = null;
      this._settleLeaves();
      this._disposeIfUnused();
    }

    _disposeIfUnused() {
      if (this.joiner || this.watchers.size || this.op) return;
      if (this.client._presence.get(this.id) === this) this.client._presence.delete(this.id);
    }

    _settleLeaves() {
      if (!this.leaves.length) return;
      var have = this.held();
      var want = this.wanted();
      var self = this;
      this.leaves = this.leaves.filter(function (w) {
        var stillHeld = w.handle.kind === 'join'
          ? have === 'joined' && self.joinedBy === w.handle
          : have !== null && want === null;
        if (stillHeld) return true;
        w.resolve();
        return false;
      });
    }

    _failWaiters(err) {
      this.handles().forEach(function (h) { h._rejectUpdates(function () { return true; }, err); });
      this.leaves.splice(0).forEach(function (w) { w.resolve(); });
    }

    _baseline(list) {
      var old = this.members;
      var next = new Map();
      list.forEach(function (m) { if (m && m.conn !== undefined) next.set(m.conn, m); });
      var joins = [], leaves = [];
      next.forEach(function (m, conn) {
        var prev = old.get(conn);
        if (!prev || !sameMember(prev, m)) joins.push(m);
      });
      old.forEach(function (m, conn) { if (!next.has(conn)) leaves.push(m); });
      this.members = next;
      this.loaded = true;
      this._changed(joins, leaves);
    }

    _onEvent(frame) {
      if (typeof frame.count === 'number' && !Array.isArray(frame.joins) && !Array.isArray(frame.leaves)) {
        if (this.mode === 'count' || !this.loaded) this._setCount(frame.count, false);
        return;
      }
      // In arrival order; within one frame the leaves first, then the joins (a member that
      // left and came back, as after a server's re-announcement, ends up present).
      var members = this.members;
      var joins = [], leaves = [];
      (Array.isArray(frame.leaves) ? frame.leaves : []).forEach(function (m) {
        if (!m || !members.has(m.conn)) return; // unknown conn: nothing to do
        leaves.push(members.get(m.conn));
        members.delete(m.conn);
      });
      (Array.isArray(frame.joins) ? frame.joins : []).forEach(function (m) {
        if (!m || m.conn === undefined) return;
        var prev = members.get(m.conn);
        if (prev && sameMember(prev, m)) return;
        members.set(m.conn, m); // an update replaces in place
        joins.push(m);
      });
      if (joins.length || leaves.length) this._changed(joins, leaves);
    }

    _setCount(n, fromReply) {
      var changed = this.count !== n;
      this.count = n;
      if (fromReply) this.loaded = true;
      this.watchers.forEach(function (h) { if (h.kind === 'count') h._notifyCount(changed); });
    }

    _changed(joins, leaves) {
      this.list = Array.from(this.members.values());
      var list = this.list;
      var change = { joins: joins, leaves: leaves };
      this.handles().forEach(function (h) {
        if (h.kind === 'count') h._notifyCount(false);
        else h._notify(list, change);
      });
    }

    membersMode() {
      return this.loaded && (this.mode === 'members' || this.mode === 'joined');
    }
  }

  var NOT_READY = {};

  /** The handle returned by client.presence() and client.watchPresence(). */
  class Presence {
    constructor(client, kind, route, key, state, options) {
      this.client = client;
      /** 'join' (client.presence), 'watch' or 'count' (client.watchPresence) */
      this.kind = kind;
      this.route = route;
      this.key = key;
      /** the latest state asked for (join handles); re-joins send it */
      this.state = kind === 'join' ? state : undefined;
      /** the members, a new array on every change (empty for count handles) */
      this.members = [];
      /** the last error (a refused join or watch, or a failure being retried), or null */
      this.error = null;
      /** true after leave() (or once the server refused the key for good) */
      this.closed = false;
      this._entry = null;
      this._listeners = new Set();
      this._notified = false;
      this._lastCount = NOT_READY;
      this._version = 1;           // of `state`
      this._applied = 0;           // the newest version the server holds
      this._accepted = undefined;  // the state of version _applied
      this._updates = [];          // update() promises waiting: {version, resolve, reject, timer}
      var self = this;
      this._readySettled = false;
      this.ready = new Promise(function (resolve, reject) { self._readyResolve = resolve; self._readyReject = reject; });
      this.ready.catch(function () {}); // no unhandled-rejection noise for onChange-only users
      var timeout = options.timeout != null ? options.timeout : client.timeout;
      if (timeout > 0 && isFinite(timeout)) {
        this._readyTimer = setTimeout(function () {
          self._failReady(new DragonError('timeout', 'presence on ' + route + ' ' + JSON.stringify(key) + ' not ready within ' + timeout + ' ms'));
        }, timeout);
        if (this._readyTimer && this._readyTimer.unref) this._readyTimer.unref();
      }
    }

    /** this client's current connection id (it changes with every reconnection) */
    get conn() { return this.client.conn; }

    /** this connection's own member entry, or null (not joined yet, or a watcher) */
    get self() {
      var conn = this.client.conn;
      if (conn === null || conn === undefined) return null;
      for (var i = 0; i < this.members.length; i++) if (this.members[i].conn === conn) return this.members[i];
      return null;
    }

    /** the members other than this connection */
    get others() {
      var conn = this.client.conn;
      return this.members.filter(function (m) { return m.conn !== conn; });
    }

    /** the number of members (count handles: as the server counts them) */
    get count() {
      var e = this._entry;
      if (this.kind !== 'count') return this.members.length;
      var n = !e ? null : e.membersMode() ? e.list.length : e.count;
      // between a reconnection and its reply: the last count this handle reported
      if (n === null && this._lastCount !== NOT_READY) return this._lastCount;
      return n;
    }

    /**
     * cb(members, {joins, leaves}) on every change (count handles: cb(count)). The first call
     * after the handle is ready lists every member as a join. Returns off().
     */
    onChange(cb) {
      if (typeof cb !== 'function') throw new TypeError('callback must be a function');
      var set = this._listeners;
      set.add(cb);
      return function off() { set.delete(cb); };
    }

    /** The members grouped by user (see groupByUser). */
    byUser(keyOf) { return groupByUser(this.members, keyOf); }

    /**
     * Set this connection's state. Resolves to the members once the server holds it (or a
     * newer state); while offline it waits for the re-join, which carries it. Rejects with
     * `validation` (too large; the previous state stays), `timeout`, or `bad_request`.
     */
    update(state, options) {
      if (this.kind !== 'join') return Promise.reject(new DragonError('bad_request', 'a watching handle has no state to update'));
      if (this.closed) return Promise.reject(new DragonError('bad_request', 'this presence handle has left'));
      if (!isPlainObject(state)) return Promise.reject(new DragonError('bad_request', 'presence state must be an object'));
      var self = this;
      this.state = state;
      var version = ++this._version;
      var p = new Promise(function (resolve, reject) {
        var w = { version: version, resolve: resolve, reject: reject, timer: null };
        var timeout = options && options.timeout != null ? options.timeout : self.client.timeout;
        if (timeout > 0 && isFinite(timeout)) {
          w.timer = setTimeout(function () {
            var i = self._updates.indexOf(w);
            if (i < 0) return;
            self._updates.splice(i, 1);
            reject(new DragonError('timeout', 'presence_update got no reply within ' + timeout + ' ms (the state is kept for the next join)'));
          }, timeout);
        }
        self._updates.push(w);
      });
      if (this._entry) this._entry.sync();
      this.client._wake(); // idle (4009): the update needs the server
      return p;
    }

    /** Leave (or stop watching): no more events, no re-joins. Resolves once the server confirmed. */
    leave() {
      if (this.closed) return Promise.resolve();
      var e = this._entry;
      this._close(new DragonError('disconnected', 'left presence before the server answered'));
      if (!e) return Promise.resolve();
      var self = this;
      var p = new Promise(function (resolve) { e.leaves.push({ handle: self, resolve: resolve }); });
      e.sync();
      return p;
    }

    /** alias of leave() */
    close() { return this.leave(); }

    _close(err) {
      this.closed = true;
      clearTimeout(this._readyTimer);
      var e = this._entry;
      if (e) {
        if (e.joiner === this) e.joiner = null;
        e.watchers.delete(this);
        if (this.kind === 'count') this._lastCount = this.count;
        this._entry = null;
      }
      this._rejectUpdates(function () { return true; }, err);
      this._failReady(err);
      this._listeners.clear();
    }

    /** Refused for good: close, tell the listeners the list is gone, report it. */
    _fail(err) {
      var wasReady = this._readySettled;
      var previous = this.members;
      var listeners = Array.from(this._listeners);
      this.error = err;
      this._close(err);
      this.members = [];
      var client = this.client;
      if (previous.length) {
        var change = { joins: [], leaves: previous, error: err };
        listeners.forEach(function (cb) { safeCall(cb, [[], change], function (e) { client._emit('error', e); }); });
      }
      if (wasReady) {
        err.presence = this;
        client._emit('error', err);
      }
    }

    _failReady(err) {
      if (this._readySettled) return;
      this._readySettled = true;
      clearTimeout(this._readyTimer);
      this._readyReject(err);
    }

    _onLoaded(op) {
      // ready: join handles once their own join is in; watchers once the key is followed.
      if (this.kind === 'join' ? op.handle !== this : !this._entry || !this._entry.loaded) return;
      if (this.kind === 'watch' && !this._entry.membersMode()) return;
      if (!this._readySettled) {
        this._readySettled = true;
        clearTimeout(this._readyTimer);
        this._readyResolve(this);
      }
    }

    _notify(list, change) {
      this.members = list;
      if (!this._notified) {
        // the first call lists everyone as joining
        change = { joins: list.slice(), leaves: [] };
        this._notified = true;
      } else if (!change.joins.length && !change.leaves.length) {
        return;
      }
      var client = this.client;
      Array.from(this._listeners).forEach(function (cb) {
        safeCall(cb, [list, change], function (err) { client._emit('error', err); });
      });
    }

    _notifyCount() {
      var n = this.count;
      if (n === null || n === this._lastCount) return;
      this._lastCount = n;
      var client = this.client;
      Array.from(this._listeners).forEach(function (cb) {
        safeCall(cb, [n], function (err) { client._emit('error', err); });
      });
    }

    _resolveUpdates(upTo) {
      var members = this.members;
      this._updates = this._updates.filter(function (w) {
        if (w.version > upTo) return true;
        clearTimeout(w.timer);
        w.resolve(members);
        return false;
      });
    }

    _rejectUpdates(which, err) {
      this._updates = this._updates.filter(function (w) {
        if (!which(w.version)) return true;
        clearTimeout(w.timer);
        w.reject(err);
        return false;
      });
    }
  }

  function openPresence(client, kind, route, key, state, options) {
    var h = new Presence(client, kind, route, key, state, options);
    if (typeof route !== 'string' || !route) {
      h._fail(new DragonError('bad_request', 'route must be a non-empty string'));
      return h;
    }
    if (kind === 'join' && !isPlainObject(state)) {
      h._fail(new DragonError('bad_request', 'presence state must be an object'));
      return h;
    }
    var id = presenceKeyId(route, key);
    var e = client._presence.get(id);
    if (!e) {
      e = new PresenceKey(client, route, key, id);
      client._presence.set(id, e);
    }
    if (kind === 'join') {
      if (e.joiner) {
        h._fail(new DragonError('conflict', 'this client has already joined presence on ' + route + ' ' +
          JSON.stringify(key) + ': update() that handle, or leave() it first'));
        return h;
      }
      e.joiner = h;
    } else {
      e.watchers.add(h);
    }
    h._entry = e;
    if (kind !== 'join' && e.loaded && e.held() !== null && (kind === 'count' || e.membersMode())) {
      // the key is already followed on this connection: ready at once
      if (e.membersMode()) h._notify(e.list, { joins: [], leaves: [] });
      h._onLoaded({});
      if (kind === 'count') h._notifyCount();
    }
    e.sync();
    client._wake(); // idle (4009): joining or watching needs the server
    return h;
  }

  // ---------------------------------------------------------------------------------------------
  // LiveList: a sorted array kept current from a snapshot subscription. Events carrying a
  // `version` are applied at most once per version and never take an object back to an older
  // state (see VersionBook); the bookkeeping starts over with every snapshot.

  class LiveList {
    constructor(client, route, filter, options) {
      var o = options || {};
      this.client = client;
      this.route = route;
      this.filter = filter || {};
      this.orderBy = o.order_by || [];
      this.key = o.key || 'id';
      /** the current rows, sorted; replaced by a new array on every change */
      this.items = [];
      /** true once the first snapshot arrived */
      this.loaded = false;
      /** the last error (the subscribe was refused, a reload failed, access was revoked), or null */
      this.error = null;
      /** true after close(), or once access was revoked (the server ended the subscription) */
      this.closed = false;
      this.subscription = null;
      this._map = new Map();
      // highest change version per id (and tombstones), since the last snapshot
      this._versions = new VersionBook(o.maxTombstones);
      this._compare = makeComparator(this.orderBy, this.key);
      this._listeners = new Set();
      if (typeof o.onChange === 'function') this._listeners.add(o.onChange);
      var self = this;
      this._reloading = null;
      this._readySettled = false;
      /**
       * resolves once the first snapshot is in (rejects if the subscribe is refused, or if
       * access is revoked before that)
       */
      this.ready = new Promise(function (resolve, reject) { self._readyResolve = resolve; self._readyReject = reject; });
      // Avoid unhandled-rejection noise for users who only use onChange.
      this.ready.catch(function () {});
      client.subscribe(route, this.filter, function (frame, sub) { self._onEvent(frame, sub); }, {
        snapshot: true,
        onSubscribed: function (reply) { if (reply.items) self._reset(reply.items, { event: 'snapshot' }); }
      }).then(function (sub) {
        self.subscription = sub;
        if (self.closed) sub.unsubscribe();
        self._settleReady(null);
      }, function (err) {
        self.error = err;
        self._settleReady(err);
      });
    }

    _settleReady(err) {
      if (this._readySettled) return;
      this._readySettled = true;
      if (err) this._readyReject(err); else this._readyResolve(this);
    }

    /**
     * cb(items, change) on every change; change = the event frame or {event:'snapshot'}. An event
     * whose `version` is not newer than the one held for its object changes nothing and calls
     * nothing. Returns off().
     */
    onChange(cb) {
      if (typeof cb !== 'function') throw new TypeError('callback must be a function');
      var set = this._listeners;
      set.add(cb);
      return function off() { set.delete(cb); };
    }

    /** Get an item by id. */
    get(id) { return this._map.get(id); }

    _reset(rows, change) {
      var m = new Map();
      var key = this.key;
      rows.forEach(function (r) { if (r && r[key] !== undefined) m.set(r[key], Object.assign({}, r)); });
      this._map = m;
      // A fresh snapshot (first load, reload, resync): versions start over from it.
      this._versions.clear();
      this.loaded = true;
      this._rebuild(change);
    }

    _onEvent(frame, sub) {
      if (this.closed) return;
      if (frame.event === 'resync') { this.reload(); return; }
      if (frame.event === 'error') {
        // The server ended the subscription (access revoked); a refused resume leaves it active.
        if (sub && !sub.active && sub.error) this._revoked(sub, frame);
        return;
      }
      var ev = frame.event;
      var data = frame.data;
      if (ev !== 'created' && ev !== 'updated' && ev !== 'deleted') return;
      if (!data || typeof data !== 'object' || data[this.key] === undefined) return;
      var id = data[this.key];
      // A repeated or older version (at-least-once delivery): ignored, no change callback.
      if (this._versions.stale(id, frame.version)) return;
      var changed = applyEvent(this._map, frame, this.key);
      this._versions.record(id, ev, frame.version);
      if (changed) this._rebuild(frame);
    }

    _rebuild(change) {
      this.items = Array.from(this._map.values()).sort(this._compare);
      var items = this.items;
      var self = this;
      Array.from(this._listeners).forEach(function (cb) {
        safeCall(cb, [items, change], function (err) { self.client._emit('error', err); });
      });
    }

    /**
     * Access revoked: the subscription has ended. Empty the list, tell the listeners once,
     * stop for good (no reload), and reject `ready` if it was still pending.
     */
    _revoked(sub, frame) {
      var err = sub.error;
      var listeners = Array.from(this._listeners);
      if (!this.subscription) this.subscription = sub;
      this.error = err;
      this.closed = true;
      this._reloading = null;
      this._map = new Map();
      this._versions.clear();
      this.items = [];
      this._listeners.clear();
      var items = this.items;
      var client = this.client;
      listeners.forEach(function (cb) {
        safeCall(cb, [items, frame], function (e) { client._emit('error', e); });
      });
      this._settleReady(err);
    }

    /** Reload from a fresh snapshot (done automatically after a resync). */
    reload() {
      var self = this;
      if (this.closed || !this.subscription) return this.ready.then(function () { return self.items; });
      if (this._reloading) return this._reloading;
      var p = this.subscription.reload().then(function () { return self.items; });
      this._reloading = p;
      var clear = function () { if (self._reloading === p) self._reloading = null; };
      p.then(clear, function (err) { clear(); self.error = err; self.client._emit('error', err); });
      return p;
    }

    /** Stop listening; the items stay as they are. (After a revocation it is closed already.) */
    close() {
      if (this.closed) return Promise.resolve();
      this.closed = true;
      this._listeners.clear();
      return this.subscription ? this.subscription.unsubscribe() : Promise.resolve();
    }
  }

  function liveList(client, route, filter, options) {
    return new LiveList(client, route, filter, options);
  }

  var api = {
    Dragon: Dragon,
    DragonError: DragonError,
    Subscription: Subscription,
    LiveList: LiveList,
    liveList: liveList,
    Presence: Presence,
    groupByUser: groupByUser,
    makeComparator: makeComparator,
    sortItems: sortItems,
    compareValues: compareValues,
    applyEvent: applyEvent,
    PROTOCOL_VERSION: PROTOCOL_VERSION,
    version: '0.1.0'
  };
  root.dragon = api;
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this);
