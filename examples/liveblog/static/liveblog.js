// Liveblog: the three pages on dragon.js, no framework, one WebSocket per page.
//
// - Front page (/): every blog (a liveList of `blog`), each with its latest post: one get_list
//   per blog, kept current by a subscription to `post` (a new post, a deletion, a new title).
// - Blog page (/blog?slug=news or ?id=1): the blog (a liveList of `blog` by slug or id) and its
//   posts, newest first (a liveList of `post` {blog_id}): new posts appear at the top, edits
//   change them in place, deletions remove them; Like calls `post.like`, and the count comes
//   back as coalesced `updated` events. Anonymous: reading and liking need no account.
// - Author page (/author): POST /login answers a signed token, kept in localStorage (a reload
//   stays signed in) and given to the client as its `token` option; then a blog to write in,
//   a form to publish or edit a post, and the blog's posts with Edit and Delete. What the
//   server refuses (not an author, a title too long, ...) is shown as the server said it.
//
// Each page's <body data-page="..."> picks its init function below; window.liveblogClient is
// the page's client (for debugging and the end-to-end tests).
(function () {
  'use strict';

  const { Dragon } = window.dragon;

  const TOKEN_KEY = 'liveblog-token';
  const USER_KEY = 'liveblog-user';
  const BLOG_KEY = 'liveblog-author-blog';

  // -------------------------------------------------------------------------------------------
  // Small helpers

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') node.textContent = v;
      else if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
    return node;
  };

  function showError(message) {
    const box = $('#error');
    if (!box) return;
    $('#error-text').textContent = message;
    box.hidden = false;
  }
  function clearError() {
    const box = $('#error');
    if (!box) return;
    box.hidden = true;
    $('#error-text').textContent = '';
  }

  /** "<what>: <what the server said>" (validation details per field). */
  function describe(err, what) {
    if (!err) return what;
    let text = err.message || err.code || String(err);
    if (err.code === 'validation' && err.details && typeof err.details === 'object') {
      const parts = Object.entries(err.details).map(([field, msgs]) => `${field}: ${[].concat(msgs).join(', ')}`);
      if (parts.length) text = parts.join('; ');
    } else if (err.code === 'disconnected' || err.code === 'timeout') {
      text = 'the connection dropped; please try again';
    }
    return `${what}: ${text}`;
  }

  function toDate(ts) {
    if (ts === null || ts === undefined) return null;
    const d = new Date(ts);
    return isNaN(d.getTime()) ? null : d;
  }
  const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dayClock = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
  const day = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'long', day: 'numeric' });
  const count = new Intl.NumberFormat();

  /** "just now", "5 min ago", "14:03" (today) or "Mar 3, 14:03". */
  function timeLabel(ts) {
    const d = toDate(ts);
    if (!d) return '';
    const ago = Date.now() - d.getTime();
    if (ago < 45000) return 'just now';
    if (ago < 3600000) return `${Math.max(1, Math.round(ago / 60000))} min ago`;
    return d.toDateString() === new Date().toDateString() ? clock.format(d) : dayClock.format(d);
  }
  /** Fills a <time> element; the ticker below keeps the relative ones fresh. */
  function setTime(node, ts) {
    const d = toDate(ts);
    node.textContent = timeLabel(ts);
    if (d) {
      node.dateTime = d.toISOString();
      node.title = fullDate.format(d);
      node.dataset.ts = String(d.getTime());
    }
  }
  setInterval(() => {
    for (const node of document.querySelectorAll('time[data-ts]')) node.textContent = timeLabel(Number(node.dataset.ts));
  }, 30000);

  /** Newest first: by published_at (as instants, whatever the digits), then by id. */
  function newestFirst(a, b) {
    const ta = Date.parse(a.published_at) || 0;
    const tb = Date.parse(b.published_at) || 0;
    return tb - ta || b.id - a.id;
  }

  /**
   * Makes `list`'s children the rows, in order, keeping each row's element (by `data-<attr>`):
   * make(row) builds a new one, fill(node, row) brings it up to date. Returns the ids added.
   */
  function reconcile(list, rows, attr, make, fill) {
    const key = attr.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const byId = new Map([...list.children].map((node) => [Number(node.dataset[key]), node]));
    const added = [];
    let prev = null;
    for (const row of rows) {
      let node = byId.get(row.id);
      if (node) byId.delete(row.id);
      else { node = make(row); added.push(row.id); }
      fill(node, row);
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== node) list.insertBefore(node, want);
      prev = node;
    }
    for (const node of byId.values()) node.remove();
    return added;
  }

  /** Plays a CSS animation class once. */
  function flash(node, cls) {
    node.classList.remove(cls);
    void node.offsetWidth; // restart the animation
    node.classList.add(cls);
    node.addEventListener('animationend', () => node.classList.remove(cls), { once: true });
  }

  /** The connection pill in the top bar follows the client's state. */
  function showConnection(client, isCurrent = () => true) {
    const set = (state, text) => {
      const pill = $('#status');
      if (!pill || !isCurrent()) return;
      pill.dataset.state = state;
      $('#status-text').textContent = text;
      document.body.dataset.connection = state;
    };
    set('connecting', 'Connecting…');
    client.on('state', (state) => {
      if (state === 'open') set('connected', 'Live');
      else if (state === 'connecting') set('connecting', 'Connecting…');
      else if (state === 'reconnecting') set('reconnecting', 'Reconnecting…');
      else if (state === 'closed') set('offline', 'Offline');
    });
  }

  const blogHref = (blog) => `/blog?slug=${encodeURIComponent(blog.slug)}`;
  const likesWord = (n) => (n === 1 ? 'like' : 'likes');

  // -------------------------------------------------------------------------------------------
  // Front page: every blog, live, with its latest post

  function initFront() {
    const ui = { blogs: $('#blogs'), empty: $('#blogs-empty') };
    const client = new Dragon();
    window.liveblogClient = client;
    showConnection(client);

    // blog id -> its latest post (null: none; absent: not read yet)
    const latest = new Map();
    const reading = new Map(); // blog id -> read number (only the newest read counts)
    const timers = new Map();

    async function readLatest(blogId) {
      const n = (reading.get(blogId) || 0) + 1;
      reading.set(blogId, n);
      try {
        const { items } = await client.getList('post', { blog_id: blogId }, { order_by: ['-published_at', '-id'], per_page: 1 });
        if (reading.get(blogId) !== n) return;
        latest.set(blogId, items[0] || null);
        render();
      } catch (err) {
        if (err.code !== 'disconnected') showError(describe(err, 'Cannot read the latest post'));
      }
    }
    const readSoon = (blogId) => {
      clearTimeout(timers.get(blogId));
      timers.set(blogId, setTimeout(() => readLatest(blogId), 50));
    };

    // Posts anywhere: a new or deleted one may change a blog's latest, a new title changes it.
    // (Like counts arrive here too, as `updated` events changing only `likes`: ignored.)
    client.subscribe('post', {}, (frame) => {
      if (frame.event === 'resync') { for (const id of latest.keys()) readSoon(id); return; }
      const p = frame.data;
      if (!p || p.blog_id === undefined || !blogs.get(p.blog_id)) return;
      if (frame.event === 'created' || frame.event === 'deleted') readSoon(p.blog_id);
      else if (frame.event === 'updated') {
        const shown = latest.get(p.blog_id);
        if (shown && shown.id === p.id && shown.title !== p.title) { latest.set(p.blog_id, { ...shown, ...p }); render(); }
      }
    }).catch((err) => showError(describe(err, 'Cannot follow new posts')));

    const blogs = client.liveList('blog', {}, { order_by: ['title'] });
    blogs.onChange(render);
    blogs.ready.catch((err) => showError(describe(err, 'Cannot load the blogs')));

    function render() {
      const rows = blogs.items;
      for (const b of rows) if (!reading.has(b.id)) readLatest(b.id);
      const added = reconcile(ui.blogs, rows, 'blog-id', (b) => el('li', { class: 'blog-card', 'data-blog-id': b.id },
        el('a', { class: 'blog-link' },
          el('h2', { class: 'blog-title' }),
          el('p', { class: 'latest' },
            el('span', { class: 'latest-label', text: 'Latest' }),
            el('span', { class: 'latest-title' }),
            el('time', { class: 'latest-time' })),
          el('p', { class: 'blog-meta muted' }, el('span', { class: 'blog-since' })),
          el('span', { class: 'arrow', 'aria-hidden': 'true', text: '→' }))),
      (li, b) => {
        li.dataset.slug = b.slug;
        li.querySelector('a').href = blogHref(b);
        li.querySelector('.blog-title').textContent = b.title;
        const since = toDate(b.created_at);
        li.querySelector('.blog-since').textContent = since ? `since ${day.format(since)}` : '';
        const post = latest.get(b.id);
        const line = li.querySelector('.latest');
        line.classList.toggle('none', post === null);
        line.hidden = post === undefined;
        li.querySelector('.latest-title').textContent = post ? post.title : 'No posts yet';
        const time = li.querySelector('.latest-time');
        if (post) setTime(time, post.published_at); else { time.textContent = ''; delete time.dataset.ts; }
      });
      // Blogs that arrive live (not with the first snapshot) are greeted.
      if (ui.blogs.dataset.loaded) for (const id of added) flash(ui.blogs.querySelector(`[data-blog-id="${id}"]`), 'fresh');
      if (blogs.loaded) ui.blogs.dataset.loaded = '1';
      ui.empty.hidden = !blogs.loaded || rows.length > 0;
      for (const id of [...latest.keys()]) if (!blogs.get(id)) { latest.delete(id); reading.delete(id); }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Blog page: the posts, newest first, live; likes

  function initBlog() {
    const ui = {
      head: $('#blog-head'),
      title: $('#blog-title'),
      meta: $('#blog-meta'),
      missing: $('#blog-missing'),
      posts: $('#posts'),
      empty: $('#posts-empty'),
    };
    const params = new URLSearchParams(location.search);
    const slug = params.get('slug');
    const id = Number(params.get('id'));
    const client = new Dragon();
    window.liveblogClient = client;
    showConnection(client);

    let blogId = null;
    let posts = null;

    const missing = () => {
      ui.head.hidden = true;
      ui.missing.hidden = false;
      ui.posts.replaceChildren();
      ui.empty.hidden = true;
      document.title = 'No such blog · Liveblog';
      if (posts) { posts.close().catch(() => {}); posts = null; blogId = null; }
    };
    if (!slug && !(Number.isInteger(id) && id > 0)) { missing(); return; }

    const blogs = client.liveList('blog', slug ? { slug } : { id });
    blogs.onChange((items) => {
      const blog = items[0];
      if (!blog) { if (blogs.loaded) missing(); return; }
      ui.head.hidden = false;
      ui.missing.hidden = true;
      ui.title.textContent = blog.title;
      document.title = `${blog.title} · Liveblog`;
      if (blogId !== blog.id) follow(blog.id);
      renderMeta();
    });
    blogs.ready.catch((err) => showError(describe(err, 'Cannot load the blog')));

    function follow(id) {
      if (posts) posts.close().catch(() => {});
      blogId = id;
      const list = client.liveList('post', { blog_id: id }, { order_by: ['-published_at', '-id'] });
      posts = list;
      list.onChange(() => { if (posts === list) render(list); });
      list.ready.catch((err) => showError(describe(err, 'Cannot load the posts')));
    }

    function renderMeta() {
      const n = posts && posts.loaded ? posts.items.length : null;
      ui.meta.textContent = n === null ? '' : n === 0 ? 'No posts yet' : `${count.format(n)} ${n === 1 ? 'post' : 'posts'} · newest first · updates live`;
    }

    function like(li) {
      const postId = Number(li.dataset.postId);
      flash(li.querySelector('button.like'), 'pop');
      client.call('post', 'like', { id: postId }).catch((err) => {
        if (err.code !== 'not_found') showError(describe(err, 'Cannot like the post'));
      });
    }

    function render(list) {
      const rows = [...list.items].sort(newestFirst);
      const added = reconcile(ui.posts, rows, 'post-id', (p) => {
        const li = el('li', { class: 'post', 'data-post-id': p.id },
          el('article', {},
            el('header', { class: 'post-head' },
              el('h2', { class: 'title' }),
              el('p', { class: 'meta' },
                el('time', { class: 'time' }),
                el('span', { class: 'updated', text: '(updated)', hidden: true }))),
            el('p', { class: 'body' }),
            el('footer', { class: 'post-foot' },
              el('button', { type: 'button', class: 'like', onclick: () => like(li) },
                el('span', { class: 'heart', 'aria-hidden': 'true', text: '♥' }),
                el('span', { text: 'Like' })),
              el('span', { class: 'likes-count' },
                el('span', { class: 'likes', text: '0' }),
                el('span', { class: 'likes-label', text: ' likes' })))));
        return li;
      }, (li, p) => {
        li.querySelector('.title').textContent = p.title;
        li.querySelector('.body').textContent = p.body;
        li.querySelector('.body').hidden = !p.body;
        setTime(li.querySelector('.time'), p.published_at);
        const updated = li.querySelector('.updated');
        updated.hidden = !p.updated_at;
        const at = toDate(p.updated_at);
        updated.title = at ? `updated ${fullDate.format(at)}` : '';
        const likes = li.querySelector('.likes');
        const n = Number(p.likes) || 0;
        const before = likes.dataset.n === undefined ? n : Number(likes.dataset.n);
        likes.dataset.n = String(n);
        likes.textContent = count.format(n);
        li.querySelector('.likes-label').textContent = ` ${likesWord(n)}`;
        li.querySelector('button.like').setAttribute('aria-label', `Like “${p.title}” (${count.format(n)} ${likesWord(n)})`);
        if (n > before) flash(li.querySelector('.likes-count'), 'bump');
      });
      // Posts that arrive live (not the first snapshot) are greeted.
      if (ui.posts.dataset.loaded) for (const pid of added) flash(ui.posts.querySelector(`[data-post-id="${pid}"]`), 'fresh');
      if (list.loaded) ui.posts.dataset.loaded = '1';
      ui.empty.hidden = !list.loaded || rows.length > 0;
      renderMeta();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Author page: log in, pick a blog, publish, edit, delete

  function initAuthor() {
    const ui = {
      me: $('#me'),
      logout: $('#logout'),
      authView: $('#auth-view'),
      loginForm: $('#login-form'),
      username: $('#login-username'),
      password: $('#login-password'),
      loginButton: $('#login-button'),
      loginError: $('#login-error'),
      authorView: $('#author-view'),
      blogSelect: $('#blog-select'),
      blogLink: $('#blog-link'),
      notStaff: $('#not-staff'),
      form: $('#post-form'),
      heading: $('#editor-heading'),
      title: $('#post-title'),
      body: $('#post-body'),
      publish: $('#publish-button'),
      save: $('#save-button'),
      cancel: $('#cancel-edit'),
      newBlog: $('#new-blog'),
      newBlogForm: $('#new-blog-form'),
      newBlogTitle: $('#new-blog-title'),
      newBlogSlug: $('#new-blog-slug'),
      posts: $('#posts'),
      postsEmpty: $('#posts-empty'),
      postsCount: $('#posts-count'),
    };

    /** {client, user, blogs, posts, blogId, editing} while signed in; null when signed out. */
    let session = null;

    function showView(view) {
      document.body.dataset.view = view;
      ui.authView.hidden = view !== 'auth';
      ui.authorView.hidden = view !== 'author';
      ui.logout.hidden = view !== 'author';
      ui.me.hidden = view !== 'author';
      if (view === 'auth') {
        $('#status').dataset.state = 'offline';
        $('#status-text').textContent = 'Signed out';
      }
    }

    function setLoginError(text) {
      ui.loginError.textContent = text || '';
      ui.loginError.hidden = !text;
    }

    ui.loginForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const username = ui.username.value.trim();
      const password = ui.password.value;
      if (!username || !password) {
        setLoginError('Enter a username and a password.');
        (username ? ui.password : ui.username).focus();
        return;
      }
      setLoginError('');
      ui.loginButton.disabled = true;
      try {
        let res;
        try {
          res = await fetch('/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }) });
        } catch {
          setLoginError('Login failed: cannot reach the server.');
          return;
        }
        const raw = await res.text().catch(() => '');
        let data = null;
        try { data = raw ? JSON.parse(raw) : null; } catch {}
        if (!res.ok || !data || typeof data.token !== 'string') {
          const why = (data && typeof data.error === 'string' && data.error) || raw.trim() || `HTTP ${res.status}`;
          setLoginError(`Login failed: ${why}`);
          ui.password.select();
          return;
        }
        localStorage.setItem(TOKEN_KEY, data.token);
        localStorage.setItem(USER_KEY, JSON.stringify(data.user || null));
        ui.password.value = '';
        startSession(data.user || null);
      } finally {
        ui.loginButton.disabled = false;
      }
    });

    ui.logout.addEventListener('click', () => signOut());

    function signOut(message) {
      localStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(USER_KEY);
      if (session) {
        const s = session;
        session = null;
        if (s.posts) s.posts.close().catch(() => {});
        s.blogs.close().catch(() => {});
        s.client.disconnect();
      }
      window.liveblogClient = null;
      stopEditing();
      ui.blogSelect.replaceChildren();
      ui.posts.replaceChildren();
      showView('auth');
      setLoginError(message || '');
      ui.username.focus();
    }

    // Another tab logged out or in: follow it.
    window.addEventListener('storage', (e) => {
      if (e.key !== TOKEN_KEY) return;
      if (session) signOut();
      if (e.newValue) startSession(readUser());
    });

    function readUser() {
      try { return JSON.parse(localStorage.getItem(USER_KEY)); } catch { return null; }
    }

    function showMe(user) {
      ui.me.replaceChildren();
      if (!user) return;
      ui.me.append(el('span', { class: 'me-name', text: user.username }));
      if (user.staff) ui.me.append(el('span', { class: 'badge', text: 'author' }));
      ui.notStaff.hidden = user.staff === true;
    }

    function startSession(user) {
      if (session) return;
      clearError();
      const client = new Dragon({ token: () => localStorage.getItem(TOKEN_KEY) });
      window.liveblogClient = client;
      const s = { client, user, blogs: null, posts: null, blogId: null, editing: null };
      session = s;
      showMe(user);
      showView('author');
      showConnection(client, () => session === s);

      client.on('open', (info) => {
        if (session !== s) return;
        if (!info.user) { signOut('Your session has ended. Please log in again.'); return; }
        s.user = info.user;
        localStorage.setItem(USER_KEY, JSON.stringify(info.user));
        showMe(info.user);
      });
      client.on('error', (err) => {
        if (session !== s) return;
        if (err && (err.code === 'unauthenticated' || err.code === 'token_expired')) {
          signOut('Your session has ended. Please log in again.');
        }
      });

      s.blogs = client.liveList('blog', {}, { order_by: ['title'] });
      s.blogs.onChange(() => { if (session === s) renderBlogs(); });
      s.blogs.ready.catch((err) => { if (session === s) showError(describe(err, 'Cannot load the blogs')); });
    }

    function renderBlogs() {
      const s = session;
      const rows = s.blogs.items;
      const select = ui.blogSelect;
      reconcile(select, rows, 'blog-id', (b) => el('option', { 'data-blog-id': b.id, value: b.id }), (opt, b) => {
        opt.textContent = b.title;
      });
      if (!rows.length) {
        select.disabled = true;
        ui.blogLink.hidden = true;
        if (s.blogs.loaded) { ui.newBlog.open = true; choose(null); }
        return;
      }
      select.disabled = false;
      let want = s.blogId !== null && s.blogs.get(s.blogId) ? s.blogId : null;
      if (want === null) {
        const saved = localStorage.getItem(BLOG_KEY);
        const bySlug = rows.find((b) => b.slug === saved);
        want = (bySlug || rows[0]).id;
      }
      select.value = String(want);
      const blog = s.blogs.get(want);
      ui.blogLink.hidden = false;
      ui.blogLink.href = blogHref(blog);
      choose(want);
    }

    ui.blogSelect.addEventListener('change', () => {
      if (!session) return;
      const id = Number(ui.blogSelect.value);
      const blog = session.blogs.get(id);
      if (!blog) return;
      localStorage.setItem(BLOG_KEY, blog.slug);
      ui.blogLink.href = blogHref(blog);
      choose(id);
    });

    /** Follows the posts of blog `id` (null: none). */
    function choose(id) {
      const s = session;
      if (!s || s.blogId === id) return;
      if (s.posts) s.posts.close().catch(() => {});
      s.posts = null;
      s.blogId = id;
      stopEditing();
      ui.posts.replaceChildren();
      ui.postsCount.textContent = '';
      ui.postsEmpty.hidden = true;
      if (id === null) return;
      const list = s.client.liveList('post', { blog_id: id }, { order_by: ['-published_at', '-id'] });
      s.posts = list;
      list.onChange(() => { if (session === s && s.posts === list) renderPosts(list); });
      list.ready.catch((err) => { if (session === s) showError(describe(err, 'Cannot load the posts')); });
    }

    function renderPosts(list) {
      const s = session;
      const rows = [...list.items].sort(newestFirst);
      reconcile(ui.posts, rows, 'post-id', (p) => {
        const li = el('li', { class: 'author-post', 'data-post-id': p.id },
          el('div', { class: 'info' },
            el('h3', { class: 'title' }),
            el('p', { class: 'meta muted' },
              el('time', { class: 'time' }),
              el('span', { class: 'updated', text: '(updated)', hidden: true }),
              el('span', { class: 'likes-count' }, el('span', { class: 'likes' }), el('span', { class: 'likes-label' }))),
            el('p', { class: 'body' })),
          el('div', { class: 'actions' },
            el('button', { type: 'button', class: 'edit', text: 'Edit', onclick: () => startEditing(Number(li.dataset.postId)) }),
            el('button', { type: 'button', class: 'delete', text: 'Delete', onclick: () => removePost(li) })));
        return li;
      }, (li, p) => {
        li.querySelector('.title').textContent = p.title;
        li.querySelector('.body').textContent = p.body;
        setTime(li.querySelector('.time'), p.published_at);
        li.querySelector('.updated').hidden = !p.updated_at;
        const n = Number(p.likes) || 0;
        li.querySelector('.likes').textContent = count.format(n);
        li.querySelector('.likes-label').textContent = ` ${likesWord(n)}`;
        li.classList.toggle('editing', s.editing === p.id);
      });
      ui.postsEmpty.hidden = !list.loaded || rows.length > 0;
      ui.postsCount.textContent = list.loaded ? `${count.format(rows.length)} ${rows.length === 1 ? 'post' : 'posts'}` : '';
      if (s.editing !== null && !list.get(s.editing)) {
        stopEditing();
        showError('The post you were editing was deleted.');
      }
    }

    function startEditing(id) {
      const s = session;
      const p = s && s.posts && s.posts.get(id);
      if (!p) return;
      s.editing = id;
      ui.title.value = p.title;
      ui.body.value = p.body;
      ui.heading.textContent = 'Edit post';
      ui.form.classList.add('editing');
      ui.publish.hidden = true;
      ui.save.hidden = false;
      ui.cancel.hidden = false;
      for (const li of ui.posts.children) li.classList.toggle('editing', Number(li.dataset.postId) === id);
      ui.title.focus();
      ui.title.select();
    }

    function stopEditing() {
      if (session) session.editing = null;
      ui.form.classList.remove('editing');
      ui.heading.textContent = 'New post';
      ui.publish.hidden = false;
      ui.save.hidden = true;
      ui.cancel.hidden = true;
      ui.title.value = '';
      ui.body.value = '';
      for (const li of ui.posts.children) li.classList.remove('editing');
    }
    ui.cancel.addEventListener('click', () => { stopEditing(); ui.title.focus(); });
    ui.form.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && session && session.editing !== null) { e.preventDefault(); stopEditing(); }
    });

    ui.form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const s = session;
      if (!s) return;
      const editing = s.editing;
      if (editing === null && s.blogId === null) { showError('Choose a blog first.'); return; }
      // What the server accepts is the server's to say (it checks the title's length, and
      // that you are an author): its answer is shown as it is.
      const data = { title: ui.title.value.trim(), body: ui.body.value.replace(/\s+$/, '') };
      const buttons = [ui.publish, ui.save];
      for (const b of buttons) b.disabled = true;
      try {
        if (editing === null) await s.client.create('post', { blog_id: s.blogId, ...data });
        else await s.client.update('post', editing, data);
        if (session !== s) return;
        clearError();
        stopEditing();
        ui.title.focus();
      } catch (err) {
        if (session === s) showError(describe(err, editing === null ? 'Cannot publish' : 'Cannot save'));
      } finally {
        for (const b of buttons) b.disabled = false;
      }
    });

    async function removePost(li) {
      const s = session;
      const id = Number(li.dataset.postId);
      const p = s && s.posts && s.posts.get(id);
      if (!p) return;
      if (!window.confirm(`Delete “${p.title}”? Readers will see it vanish.`)) return;
      const button = li.querySelector('.delete');
      button.disabled = true;
      try {
        await s.client.delete('post', id);
        if (s.editing === id) stopEditing();
      } catch (err) {
        if (err.code !== 'not_found') showError(describe(err, 'Cannot delete the post'));
      } finally {
        button.disabled = false;
      }
    }

    // A slug from the title, until the slug is typed by hand.
    let slugTouched = false;
    const slugify = (t) => t.toLowerCase().normalize('NFKD').replace(/[\u0300-\u036f]/g, '')
      .replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60);
    ui.newBlogTitle.addEventListener('input', () => { if (!slugTouched) ui.newBlogSlug.value = slugify(ui.newBlogTitle.value); });
    ui.newBlogSlug.addEventListener('input', () => { slugTouched = ui.newBlogSlug.value !== ''; });
    ui.newBlogForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const s = session;
      if (!s) return;
      const button = ui.newBlogForm.querySelector('button');
      button.disabled = true;
      try {
        const blog = await s.client.create('blog', { title: ui.newBlogTitle.value.trim(), slug: ui.newBlogSlug.value.trim() });
        if (session !== s) return;
        clearError();
        ui.newBlogTitle.value = '';
        ui.newBlogSlug.value = '';
        slugTouched = false;
        ui.newBlog.open = false;
        localStorage.setItem(BLOG_KEY, blog.slug);
        s.blogId = null; // pick it once the list has it
        if (s.blogs.get(blog.id)) renderBlogs();
        else s.blogId = -1; // renderBlogs falls back to the saved slug when the blog arrives
      } catch (err) {
        if (session === s) showError(describe(err, 'Cannot create the blog'));
      } finally {
        button.disabled = false;
      }
    });

    // Start: signed in already (a token from an earlier visit), or the login form.
    if (localStorage.getItem(TOKEN_KEY)) startSession(readUser());
    else { showView('auth'); ui.username.focus(); }
  }

  // -------------------------------------------------------------------------------------------

  const dismiss = $('#error-dismiss');
  if (dismiss) dismiss.addEventListener('click', clearError);

  const pages = { front: initFront, blog: initBlog, author: initAuthor };
  const init = pages[document.body.dataset.page];
  if (init) init();
  window.liveblog = pages;
})();
