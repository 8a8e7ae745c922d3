// dragon.mjs: the Dragon client as an ES module. All logic lives in dragon.js (a classic
// script that defines globalThis.dragon); this module loads it and re-exports its members.
import './dragon.js';

const dragon = globalThis.dragon;

export const Dragon = dragon.Dragon;
export const DragonError = dragon.DragonError;
export const Subscription = dragon.Subscription;
export const LiveList = dragon.LiveList;
export const liveList = dragon.liveList;
export const Presence = dragon.Presence;
export const groupByUser = dragon.groupByUser;
export const makeComparator = dragon.makeComparator;
export const sortItems = dragon.sortItems;
export const compareValues = dragon.compareValues;
export const applyEvent = dragon.applyEvent;
export const PROTOCOL_VERSION = dragon.PROTOCOL_VERSION;
export const version = dragon.version;
export default dragon;
