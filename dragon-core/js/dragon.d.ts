// Type declarations for dragon.js / dragon.mjs, the Dragon realtime client (protocol version 1).
// Served at /dragon/dragon.d.ts.
//
// Behaviour in short:
// - Every call returns a promise; failures reject with a DragonError (`code`, `message`,
//   `details` from the protocol's error object; `timeout` when no reply came in time,
//   `disconnected` when the connection was lost or closed).
// - Calls made while disconnected are QUEUED and sent after the reconnection (still bounded by
//   their timeout). Calls already on the wire when the connection drops: reads (get_list,
//   get_single, subscribe, ping, whoami, presence_watch) are resent, writes reject with
//   `disconnected` (they may or may not have been applied). After disconnect() everything
//   pending rejects with `disconnected`.
// - Reconnection: exponential backoff with jitter, unlimited attempts by default. Subscriptions
//   are re-established with `since` = the last position seen (the server picks a new sub id).
//   If the server cannot replay (`recovered: false`) or sends a `resync` frame, the client emits
//   'resync' and the subscription's handler gets `{event: 'resync', ...}`; a LiveList reloads
//   itself from a fresh snapshot.
// - Close codes: 4001 (authentication required) and 1008 (origin policy) stop reconnecting
//   (error codes `unauthenticated` / `forbidden`). 4003 (token expired: no new token came
//   through `auth()` within the server's grace period) stops it too, with `token_expired`,
//   unless the `token` option is a function: then the client reconnects with backoff and the
//   function gives the fresh token. 1013 (the server's authentication backend failed, try
//   again later) is retried like any other drop. 4009 (idle: the connection sent no request
//   for the server's idle timeout) does not reconnect by itself: state 'idle' until the client
//   is needed again (a call, connect(), reconnectNow(), or in a browser the page becoming
//   visible or focused); then subscriptions, LiveLists and presence resume as after any
//   reconnection.
// - Revoked access: the server ends subscriptions with an `error` event frame
//   `{event: 'error', route, subs, data: {code: 'forbidden', message: 'access revoked'}}`. The
//   listed subscriptions end (`active` false, `error` set; not re-established on reconnect, no
//   unsubscribe needed), their handlers get the frame plus `error` (see SubscriptionEndedEvent),
//   the client emits 'error' (a RevokedError) and sets `user` to null (the server dropped the
//   connection's user until auth() again). A LiveList on such a subscription empties, calls
//   onChange once with [], closes, sets `error` and rejects `ready` if that was still pending.
// - Change events may carry `version` (per object, higher = newer; delivery is at least once).
//   Subscription handlers get every frame as sent; a LiveList ignores repeated or older versions.
// - Presence handles (client.presence / watchPresence) join or watch again after every
//   reconnection, join handles with their latest state; their member lists are reset from
//   each reply and then follow the events.

export type Id = number | string;

/** A filter object (PROTOCOL.md section 4): `{field: value}`, `{field__op: value}`, `$or`, `$not`. */
export type Filter = { [key: string]: unknown; $or?: Filter[]; $not?: Filter };

/**
 * Stable error codes from the protocol plus the client's own `timeout`, `disconnected` and
 * `token_expired` (the server closed with 4003 and there is no token function to get a new one).
 */
export type ErrorCode =
  | 'bad_request' | 'unknown_route' | 'unknown_verb' | 'not_found' | 'validation'
  | 'unauthenticated' | 'forbidden' | 'conflict' | 'rate_limited' | 'internal' | 'unavailable'
  | 'timeout' | 'disconnected' | 'token_expired'
  | (string & {});

export class DragonError extends Error {
  constructor(code: ErrorCode, message?: string, details?: unknown);
  readonly name: 'DragonError';
  /** the protocol's error code, or `timeout` / `disconnected` */
  code: ErrorCode;
  /** the protocol's `details` (for `validation`: `{field: ["message", ...]}`), or null */
  details: any;
  static from(error: { code?: string; message?: string; details?: unknown } | null | undefined): DragonError;
}

/**
 * The client 'error' event for an `error` event frame (access revoked): code and message from
 * the frame's `data` (`forbidden`, `access revoked`), plus which subscriptions ended.
 */
export interface RevokedError extends DragonError {
  /** the frame's route */
  route: string;
  /** the subscription ids the frame listed */
  subs: string[];
  /** this client's Subscription handles that ended (listed ids it no longer knew are left out) */
  subscriptions: Subscription[];
}

export interface BackoffOptions {
  /** first delay in ms (default 500) */
  initial?: number;
  /** largest delay in ms (default 15000) */
  max?: number;
  /** growth per attempt (default 2) */
  factor?: number;
  /** share of the delay that is randomised, 0..1 (default 0.5) */
  jitter?: number;
  /** give up after this many attempts in a row (default Infinity) */
  maxAttempts?: number;
}

/** A token, or a function giving the current one before every (re)connection. */
export type TokenOption = string | (() => string | null | undefined | Promise<string | null | undefined>);

export interface DragonOptions {
  /** WebSocket URL; default: this page's origin with ws:/wss: + `/ws`. Relative paths resolve against the page. */
  url?: string;
  /**
   * Auth token, sent as `?token=` on every (re)connection. Or a function returning the current
   * token (or a promise of it; null/undefined: connect anonymously), called before every
   * (re)connection, e.g. to fetch a fresh one from a refresh endpoint; with a function, a close
   * 4003 (token expired) reconnects instead of being final. A function that throws, rejects or
   * does not settle within `timeout` counts as a failed attempt: an 'error' event, then backoff
   * and retry. `auth(token)` replaces it with that string.
   */
  token?: TokenOption;
  /** WebSocket constructor (e.g. the `ws` package in node); default globalThis.WebSocket */
  WebSocket?: any;
  /** default per-call timeout in ms (default 10000); calls reject with code `timeout` */
  timeout?: number;
  /** reconnection backoff: options, or a function attempt (0-based) => delay ms */
  backoff?: BackoffOptions | ((attempt: number) => number);
  /** give up reconnecting after this many attempts (default Infinity) */
  maxAttempts?: number;
  /** ping the server after this many idle ms to detect dead connections (default 25000; 0 = off) */
  heartbeat?: number;
  /** connect in the constructor (default true) */
  autoConnect?: boolean;
  /** requests in flight at once; more wait in the queue (default 64, the server's default limit) */
  maxInFlight?: number;
}

export interface CallOptions {
  /** this call's timeout in ms (default: the client's `timeout`) */
  timeout?: number;
}

export interface ListOptions extends CallOptions {
  /** field names, `-` prefix for descending; ties break by id */
  order_by?: string[] | string;
  /** 1-based page (default 1) */
  page?: number;
  /** rows per page (server default 50, at most 500) */
  per_page?: number;
}

export interface ListMeta {
  page: number;
  per_page: number;
  total: number;
  pages: number;
  position: string;
  [key: string]: unknown;
}

export interface ListResult<T = any> {
  items: T[];
  meta: ListMeta;
}

/** An event frame (PROTOCOL.md section 5). */
export interface EventFrame<T = any> {
  event: 'created' | 'updated' | 'deleted' | 'resync' | 'error' | 'hello' | 'presence' | (string & {});
  route?: string;
  /** this connection's subscription ids the event concerns */
  subs?: string[];
  data?: T;
  /** for `updated`: the published fields that changed */
  changed?: string[];
  position?: string;
  /**
   * For `created` / `updated` / `deleted` from servers with a change log: the change's sequence
   * number in its route's log. It grows strictly with every committed change of one object, so
   * for one object a higher version is newer. Delivery is at least once: the same version may
   * arrive again (and, rarely, an older one after a newer one); a LiveList applies each version
   * once and never goes back, raw subscription handlers get the frames as sent. Absent on custom
   * events, presence and from older servers.
   */
  version?: number;
  [key: string]: unknown;
}

/**
 * Passed to a subscription's handler when re-establishing it after a reconnect was refused (not
 * transient). The subscription stays active (it is tried again after the next reconnect).
 */
export interface SubscriptionErrorEvent {
  event: 'error';
  route: string;
  subs: string[];
  error: DragonError;
}

/**
 * The `error` event frame: the server ENDED the listed subscriptions (access revoked, e.g. the
 * user was logged out or lost access to the object). No more events come for them; the client
 * marks them ended (`active` false, `error` set), does not re-establish them after a reconnect,
 * and needs no unsubscribe. Handlers get the frame as sent plus `error` (the DragonError made
 * from `data`). The server also dropped the connection's user: `client.user` becomes null.
 *
 *     {"event":"error","route":"todo-item","subs":["s1","s3"],
 *      "data":{"code":"forbidden","message":"access revoked"}}
 */
export interface SubscriptionEndedEvent {
  event: 'error';
  route: string;
  subs: string[];
  data: { code: ErrorCode; message: string; details?: unknown };
  error: RevokedError;
}

/** Passed to a subscription's handler when it must reload (recovered:false or a server resync). */
export interface ResyncEvent {
  event: 'resync';
  route: string;
  subs: string[];
  /** `not_recovered`: reconnected and the server could not replay; `server`: a resync frame */
  reason: 'not_recovered' | 'server';
}

export interface ResyncInfo extends ResyncEvent {
  subscription: Subscription;
}

export interface SubscribedInfo<T = any> {
  sub: string;
  position: string;
  /** only when resuming with `since` */
  recovered?: boolean;
  /** only with snapshot */
  items?: T[];
  /** true when this was a resume after reconnecting */
  resumed: boolean;
}

export interface SubscribeOptions<T = any> extends CallOptions {
  /** ask for the matching rows with the subscription (`subscription.items`) */
  snapshot?: boolean;
  /** called synchronously on every (re)subscription reply, before any event that follows it */
  onSubscribed?: (info: SubscribedInfo<T>, subscription: Subscription<T>) => void;
}

/** Gets every frame of the subscription as the server sent it (`version` included; repeats are not filtered). */
export type EventHandler<T = any> = (frame: EventFrame<T> | ResyncEvent | SubscriptionErrorEvent | SubscriptionEndedEvent, subscription: Subscription<T>) => void;

export class Subscription<T = any> {
  readonly route: string;
  readonly filter: Filter;
  /** the current server-chosen subscription id (a new one after each reconnect; null while offline) */
  readonly id: string | null;
  /** alias of id */
  readonly sub: string | null;
  /** the last position seen (opaque) */
  readonly position: string | null;
  /** the snapshot rows of the latest subscription made with snapshot: true */
  readonly items: T[] | undefined;
  /**
   * true while live; false after unsubscribe(), or once the server ended it (an `error` event
   * frame, see SubscriptionEndedEvent: then `error` is set). Ended subscriptions are not
   * re-established after a reconnect.
   */
  readonly active: boolean;
  /** why the server ended it (code `forbidden` when access was revoked), or null */
  readonly error: RevokedError | null;
  /** stop receiving events (resolves at once, sending nothing, if it has ended already) */
  unsubscribe(): Promise<void>;
  /** drop the server subscription and subscribe again with a fresh snapshot; resolves to the rows (rejects with `error` once ended) */
  reload(): Promise<T[]>;
}

export interface LiveListOptions<T = any> {
  /** field names, `-` prefix for descending; ties break by id */
  order_by?: string[] | string;
  /** called with the new items on every change (see LiveList.onChange) */
  onChange?: (items: T[], change: EventFrame<T> | SubscriptionEndedEvent | { event: 'snapshot' }) => void;
  /** primary key field (default `id`) */
  key?: string;
  /**
   * how many deleted ids to remember with their version, so that a late older created/updated
   * does not bring them back (default 10000; the oldest are forgotten first)
   */
  maxTombstones?: number;
}

/**
 * A sorted array kept current from a snapshot subscription; reloads itself after a resync.
 *
 * Versioned events: an event whose `version` is lower than or equal to the highest version
 * already applied for its object (deletions included) is ignored: no change, no onChange call.
 * So repeated deliveries apply once and the list never goes back to an older state. This
 * bookkeeping starts over with every snapshot (first load, reload(), resync). Events without
 * `version` are applied as they come.
 *
 * Revoked access (an `error` event frame ends its subscription): the list empties, onChange is
 * called once with `[]` and that frame, and the list stops for good (`closed` true, `error`
 * set, no reload, not re-subscribed after reconnecting); `ready` rejects with the error if it
 * had not resolved yet. Make a new LiveList once access is back (e.g. after client.auth()).
 */
export class LiveList<T = any> {
  readonly client: Dragon;
  readonly route: string;
  readonly filter: Filter;
  /** the rows, sorted by order_by then id; a new array after every change */
  readonly items: T[];
  /** true once the first snapshot arrived */
  readonly loaded: boolean;
  /**
   * the last error or null: the subscribe was refused, a reload failed, or access was revoked
   * (a RevokedError, code `forbidden`; the list is then empty and closed)
   */
  readonly error: DragonError | RevokedError | Error | null;
  /** true after close(), or once access was revoked */
  readonly closed: boolean;
  readonly subscription: Subscription<T> | null;
  /** resolves once the first snapshot is in; rejects if the subscribe is refused or access is revoked before */
  readonly ready: Promise<LiveList<T>>;
  /**
   * cb on every change (not for ignored repeated or older versions); change is the event frame,
   * `{event: 'snapshot'}`, or, once when access is revoked, the `error` frame (items `[]`).
   * Returns off().
   */
  onChange(cb: (items: T[], change: EventFrame<T> | SubscriptionEndedEvent | { event: 'snapshot' }) => void): () => void;
  get(id: Id): T | undefined;
  /** reload from a fresh snapshot */
  reload(): Promise<T[]>;
  /** stop listening */
  close(): Promise<void>;
}

/** Presence keys (PROTOCOL.md section 7): an object id or a free string. `42` and `"42"` differ. */
export type PresenceKey = number | string;

/** One connection present on a key. */
export interface PresenceMember<S = Record<string, unknown>, U = any> {
  /** the connection id (a new one after each reconnection) */
  conn: string;
  /** the connection's user, or null (no login) */
  user: U | null;
  state: S;
}

/** What changed: members that joined or changed state (`joins`) and that left (`leaves`, with their last state). */
export interface PresenceChange<S = Record<string, unknown>, U = any> {
  joins: PresenceMember<S, U>[];
  leaves: PresenceMember<S, U>[];
  /** set when the handle closed because the server refused it for good (the list is then empty) */
  error?: DragonError;
}

/** Members of one user (or, with a keyOf function, of one key), in the members' order. */
export interface PresenceGroup<S = Record<string, unknown>, U = any> {
  user: U | null;
  members: PresenceMember<S, U>[];
  states: S[];
}

export interface PresenceOptions {
  /** `ready` rejects with `timeout` after this many ms (default: the client's timeout); the handle keeps trying */
  timeout?: number;
}

export interface WatchPresenceOptions extends PresenceOptions {
  /** follow only the number of members (`count`, onChange(count)): for keys with many members */
  count?: boolean;
}

/**
 * A presence handle (client.presence / client.watchPresence). It joins (or watches) at once,
 * and again after every reconnection (join handles with their latest state). Members are set
 * from each reply and then kept current from `presence` events, in arrival order.
 */
export class Presence<S = Record<string, unknown>, U = any> {
  readonly client: Dragon;
  /** 'join' (client.presence), 'watch' or 'count' (client.watchPresence) */
  readonly kind: 'join' | 'watch' | 'count';
  readonly route: string;
  readonly key: PresenceKey;
  /** join handles: the latest state asked for (sent again on every re-join) */
  readonly state: S | undefined;
  /** the members, including this connection once joined; a new array after every change */
  readonly members: PresenceMember<S, U>[];
  /** the members other than this connection */
  readonly others: PresenceMember<S, U>[];
  /** this connection's own member, or null */
  readonly self: PresenceMember<S, U> | null;
  /** this client's current connection id (changes with every reconnection) */
  readonly conn: string | null;
  /** the number of members (count handles: as the server reports it; null before the first reply) */
  readonly count: number | null;
  /** the last error: a failure being retried, or the refusal that closed the handle; null after a success */
  readonly error: DragonError | null;
  /** true after leave(), or once the server refused the key for good */
  readonly closed: boolean;
  /**
   * Resolves (to the handle) with the first reply: the join's for join handles, the watch's for
   * watchers. Rejects with the first failure (`not_found`, `unknown_verb`, `validation`,
   * `bad_request`, `conflict` when this client already joined the key, `timeout`, ...);
   * transient failures (`timeout`, `unavailable`, `internal`, `rate_limited`) are retried in
   * the background with backoff.
   */
  readonly ready: Promise<this>;
  /** cb(members, change) on every change; the first call lists every member as a join. Returns off(). */
  onChange(cb: (members: PresenceMember<S, U>[], change: PresenceChange<S, U>) => void): () => void;
  /** members grouped so that several tabs (connections) of one user show once (see groupByUser) */
  byUser(keyOf?: (member: PresenceMember<S, U>) => unknown): PresenceGroup<S, U>[];
  /**
   * Join handles: set this connection's state (an object, at most 1,024 bytes of JSON by default).
   * Resolves to the members once the server holds it (a newer state counts too); while offline
   * it waits for the re-join. Rejects with `validation` (the previous state stays), `timeout`
   * (the state is still sent with the next join), or `bad_request`.
   */
  update(state: S, options?: CallOptions): Promise<PresenceMember<S, U>[]>;
  /** leave (or stop watching); no more events or re-joins. Resolves once the server confirmed. */
  leave(): Promise<void>;
  /** alias of leave() */
  close(): Promise<void>;
}

/** A count-only watcher: `count` and onChange(count). */
export interface PresenceCount extends Omit<Presence, 'onChange' | 'update' | 'ready'> {
  readonly kind: 'count';
  readonly ready: Promise<PresenceCount>;
  onChange(cb: (count: number) => void): () => void;
}

/** A watcher without a state of its own. */
export type PresenceWatch<S = Record<string, unknown>, U = any> = Omit<Presence<S, U>, 'update' | 'state'>;

export interface OpenInfo { conn: string | null; user: any; reconnect: boolean }
/**
 * The socket's close. Codes with a meaning for the client: 4001 authentication required and
 * 1008 origin refused (final), 4003 token expired (final unless `token` is a function),
 * 1013 authentication backend failed (retried), 4009 idle (reason "idle": no reconnection
 * until needed, state 'idle'); others (1001, 1006, 4008, ...) are retried.
 */
export interface CloseInfo { code?: number; reason?: string; wasClean?: boolean }
export interface ReconnectingInfo { attempt: number; delay: number }
/**
 * - `connecting`: the first connection is being made.
 * - `open`: connected (hello received); calls are sent at once.
 * - `reconnecting`: the connection dropped; a new one is being made or waits for its backoff.
 * - `idle`: not connected and no reconnection under way. Before the first connect() (with
 *   `autoConnect: false`; calls then reject with `disconnected`), or after the server closed
 *   the connection as idle (close 4009): then the next call (queued until connected),
 *   presence()/watchPresence()/update(), connect(), reconnectNow(), or in a browser the page
 *   becoming visible (`visibilitychange`) or the window getting the focus reconnects. Nothing
 *   is live meanwhile: LiveList items and presence members stay as they were at the close.
 *   ready() alone does not reconnect.
 * - `closed`: for good (disconnect(), a final close code, or `maxAttempts` reached).
 */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export class Dragon {
  constructor(options?: DragonOptions);
  readonly url: string;
  /** the `token` option, or the string last accepted by auth() */
  token: TokenOption | undefined;
  timeout: number;
  readonly state: ConnectionState;
  readonly connected: boolean;
  /** from the server's hello */
  readonly conn: string | null;
  /** the hello's user, or what auth() resolved to; null again when access is revoked (`error` event frame) */
  readonly user: any;
  readonly protocol: number | null;

  on(event: 'open', cb: (info: OpenInfo) => void): () => void;
  on(event: 'close', cb: (info: CloseInfo) => void): () => void;
  on(event: 'reconnecting', cb: (info: ReconnectingInfo) => void): () => void;
  /** errors; for an `error` event frame (access revoked) a RevokedError (code `forbidden`, with route, subs, subscriptions) */
  on(event: 'error', cb: (error: DragonError | RevokedError | Error) => void): () => void;
  on(event: 'resync', cb: (info: ResyncInfo) => void): () => void;
  /** every state change; 'idle' after a close 4009 (see ConnectionState) */
  on(event: 'state', cb: (state: ConnectionState) => void): () => void;
  /** every event frame the server sends */
  onChannelMessage(cb: (frame: EventFrame) => void): () => void;
  /** resolves once connected */
  ready(): Promise<this>;
  /** cb once, when first connected (use on('open') for every reconnection); returns a cancel function */
  onReady(cb: (client: this) => void): () => void;
  /** connect (again after disconnect(); at once when idle); resolves once connected */
  connect(): Promise<this>;
  /** close for good; pending and queued calls reject with `disconnected` */
  disconnect(): void;
  /** skip the backoff wait and reconnect now; when idle (close 4009), reconnect now */
  reconnectNow(): Promise<this>;

  /** generic call; resolves the reply's data */
  call<R = any>(route: string, verb: string, args?: Record<string, unknown>, options?: CallOptions): Promise<R>;
  /** generic call; resolves {data, meta} */
  request<R = any, M = any>(route: string, verb: string, args?: Record<string, unknown>, options?: CallOptions): Promise<{ data: R; meta?: M }>;

  getList<T = any>(route: string, filter?: Filter | null, options?: ListOptions): Promise<ListResult<T>>;
  getSingle<T = any>(route: string, id: Id, options?: CallOptions): Promise<T>;
  create<T = any>(route: string, data: Partial<T> | Record<string, unknown>, options?: CallOptions): Promise<T>;
  update<T = any>(route: string, id: Id, data: Partial<T> | Record<string, unknown>, options?: CallOptions): Promise<T>;
  delete(route: string, id: Id, options?: CallOptions): Promise<{ id: Id }>;
  subscribe<T = any>(route: string, filter: Filter | null | undefined, onEvent: EventHandler<T>, options?: SubscribeOptions<T>): Promise<Subscription<T>>;
  subscribe<T = any>(route: string, onEvent: EventHandler<T>, options?: SubscribeOptions<T>): Promise<Subscription<T>>;
  liveList<T = any>(route: string, filter?: Filter | null, options?: LiveListOptions<T>): LiveList<T>;

  /**
   * Join presence on `key` of `route` with `state` (default {}): returns a handle at once.
   * One join per key and client (a second one fails with `conflict`); watchers may share it.
   */
  presence<S = Record<string, unknown>, U = any>(route: string, key: PresenceKey, state?: S, options?: PresenceOptions): Presence<S, U>;
  /** Watch presence on `key` without joining. */
  watchPresence(route: string, key: PresenceKey, options: WatchPresenceOptions & { count: true }): PresenceCount;
  watchPresence<S = Record<string, unknown>, U = any>(route: string, key: PresenceKey, options?: WatchPresenceOptions & { count?: false }): PresenceWatch<S, U>;

  ping(options?: CallOptions): Promise<{ time: number }>;
  whoami<U = any>(options?: CallOptions): Promise<U | null>;
  /**
   * Authenticate this connection (or renew its token before the server closes it with 4003);
   * once accepted, the token is used for reconnections and replaces the `token` option, a token
   * function included (which is then no longer called).
   */
  auth<U = any>(token: string, options?: CallOptions): Promise<U>;
}

export function liveList<T = any>(client: Dragon, route: string, filter?: Filter | null, options?: LiveListOptions<T>): LiveList<T>;
/**
 * Group presence members: by `user.id` when the user is an object with an id, else by the
 * user's JSON; members whose user is null are each their own group. `keyOf(member)` replaces
 * the user as the grouping key (null/undefined: a group of its own).
 */
export function groupByUser<S = Record<string, unknown>, U = any>(members: PresenceMember<S, U>[], keyOf?: (member: PresenceMember<S, U>) => unknown): PresenceGroup<S, U>[];
/** comparator for order_by (ties by id; strings by code point; RFC 3339 as instants; nulls first) */
export function makeComparator<T = any>(orderBy?: string[] | string, key?: string): (a: T, b: T) => number;
export function sortItems<T = any>(items: T[], orderBy?: string[] | string, key?: string): T[];
export function compareValues(a: unknown, b: unknown): number;
/** apply a created/updated/deleted event to a Map by id, idempotently; true if it changed (does not look at `version`) */
export function applyEvent<T = any>(map: Map<Id, T>, frame: EventFrame<T>, key?: string): boolean;
export const PROTOCOL_VERSION: 1;
export const version: string;

declare const dragonApi: {
  Dragon: typeof Dragon;
  DragonError: typeof DragonError;
  Subscription: typeof Subscription;
  LiveList: typeof LiveList;
  liveList: typeof liveList;
  Presence: typeof Presence;
  groupByUser: typeof groupByUser;
  makeComparator: typeof makeComparator;
  sortItems: typeof sortItems;
  compareValues: typeof compareValues;
  applyEvent: typeof applyEvent;
  PROTOCOL_VERSION: 1;
  version: string;
};
export default dragonApi;

declare global {
  /** defined by the classic script /dragon/dragon.js */
  var dragon: typeof dragonApi;
}
