/**
 * The one-time password reset link (issued by `lifeboat-service user reset-link` or a tenant admin):
 * a form for the new password; using the link sets it, voids the user's other links and ends the
 * user's sessions. A used, expired or unknown link is one page saying so.
 */
import { Hono } from 'hono';
import { isLifeboatError } from '../../shared/errors.js';
import { resetLinkUsable, resetPassword } from '../api/users.js';
import type { ServiceContext } from '../context.js';
import { MinPasswordLength } from '../users/passwords.js';
import type { SessionStore } from '../users/sessions.js';
import { Page } from './layout.js';
import { preSessionToken, preSessionTokenValid } from './sign-in.js';

function ResetPage(p: { secret: string; csrf: string; error?: string | undefined }) {
  return (
    <Page title="Set your password">
      <h1>Set your password</h1>
      {p.error ? <p class="error" role="alert" id="reset-error">{p.error}</p> : null}
      <form method="post" action={`/portal/reset/${p.secret}`} class="stack">
        <input type="hidden" name="_csrf" value={p.csrf} />
        <label for="password">New password (at least {MinPasswordLength} characters)</label>
        <input id="password" name="password" type="password" autocomplete="new-password" required minlength={MinPasswordLength} />
        <label for="confirm">The same again</label>
        <input id="confirm" name="confirm" type="password" autocomplete="new-password" required />
        <button type="submit" class="primary">Set password</button>
      </form>
    </Page>
  );
}

function Unusable() {
  return (
    <Page title="Reset link not valid">
      <h1>Reset link not valid</h1>
      <p role="alert">This link is used, expired or unknown. Ask your administrator for a new one.</p>
    </Page>
  );
}

export function resetRoutes(ctx: ServiceContext, sessions: SessionStore): Hono {
  const app = new Hono();
  app.get('/reset/:secret', async (c) => {
    const secret = c.req.param('secret');
    if (!(await resetLinkUsable(ctx, secret))) return c.html(<Unusable />, 404);
    return c.html(<ResetPage secret={secret} csrf={preSessionToken(c)} />);
  });
  app.post('/reset/:secret', async (c) => {
    const secret = c.req.param('secret');
    const form = await c.req.parseBody();
    const again = (error: string, status: 400 | 403) => c.html(<ResetPage secret={secret} csrf={preSessionToken(c)} error={error} />, status);
    if (!preSessionTokenValid(c, form._csrf)) return again('The form was out of date. Please try again.', 403);
    const password = typeof form.password === 'string' ? form.password : '';
    if (password !== form.confirm) return again('The two passwords differ.', 400);
    try {
      await resetPassword(ctx, sessions, secret, password);
    } catch (err) {
      if (isLifeboatError(err) && err.code === 'not_found') return c.html(<Unusable />, 404);
      if (isLifeboatError(err) && err.code === 'invalid_argument') return again(err.message, 400);
      throw err;
    }
    return c.redirect('/portal/sign-in?reset=1', 303);
  });
  return app;
}
