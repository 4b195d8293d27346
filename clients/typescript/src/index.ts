// onramp's TypeScript client: typed operations generated from schema.graphql
// (src/generated, by graphql-codegen) behind a small layer that adds the token, retries once
// with a fresh token when it is refused, and keeps live progress flowing over graphql-ws
// through reconnects and token expiry.

import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print, type DocumentNode } from 'graphql';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';

import {
  CompleteStepDocument,
  SkipStepDocument,
  StatusDocument,
  TrackEventsDocument,
  WatchProgressDocument,
  type EventInput,
  type StatusFieldsFragment,
  type TrackEventsMutation,
} from './generated/graphql.js';

export type { EventInput, EventStatus, OnboardingState, StepStatus, FlowScope } from './generated/graphql.js';

/** A subject's progress through one flow, as every operation returns it. */
export type OnboardingStatus = StatusFieldsFragment;
/** What happened to one event of a batch. */
export type EventResult = TrackEventsMutation['trackEvents'][number];

/**
 * Returns the JWT to send. `refresh` is true when the server refused the last one (expired
 * or revoked): fetch a new one then instead of returning a cached token.
 */
export type TokenProvider = (options: { refresh: boolean }) => string | Promise<string>;

export interface ClientOptions {
  /** The GraphQL endpoint, e.g. `https://onramp.example.com/graphql`. */
  url: string;
  /** The websocket endpoint; default: `url` with ws(s): and `/ws` appended. */
  wsUrl?: string;
  /** Supplies tokens; called for every request and every websocket connection. */
  token: TokenProvider;
  /** A fetch implementation; default: the global one. */
  fetch?: typeof fetch;
  /** A WebSocket implementation for runtimes without a global one (Node before 22: `ws`). */
  webSocketImpl?: unknown;
}

/** One GraphQL error, with onramp's stable `extensions.code`. */
export interface GraphQLErrorItem {
  message: string;
  extensions?: { code?: string; [key: string]: unknown };
}

/** A request onramp refused or that failed; `code` is the first error's `extensions.code`. */
export class OnrampError extends Error {
  readonly code: string;
  readonly errors: GraphQLErrorItem[];
  constructor(errors: GraphQLErrorItem[], status?: number) {
    const first = errors[0];
    super(first ? first.message : `HTTP ${status ?? 'error'}`);
    this.name = 'OnrampError';
    this.code = first?.extensions?.code ?? 'INTERNAL';
    this.errors = errors;
  }
}

/** Who and where: for a workspace-scoped flow, the workspace whose shared progress it is. */
export interface Scope {
  workspaceId?: string;
}

export interface ProgressHandlers {
  /** Every snapshot: the current state first, then one per change. */
  next: (status: OnboardingStatus) => void;
  /** An error the subscription cannot recover from (e.g. FORBIDDEN, NOT_FOUND). */
  error?: (error: unknown) => void;
}

export interface OnrampClient {
  /** Where the caller stands in a flow (NOT_STARTED when not enrolled). */
  status(flowKey: string, scope?: Scope): Promise<OnboardingStatus>;
  /** Completes a step; `metadata` (a JSON object) records what the user answered. */
  completeStep(flowKey: string, stepKey: string, options?: Scope & { metadata?: Record<string, unknown> }): Promise<OnboardingStatus>;
  /** Skips an optional step. */
  skipStep(flowKey: string, stepKey: string, options?: Scope & { reason?: string }): Promise<OnboardingStatus>;
  /** Sends product events (service or admin token); one result per event, in order. */
  trackEvents(events: EventInput[]): Promise<EventResult[]>;
  /**
   * Live progress: calls `next` with the current state, then on every change. Reconnects
   * (with backoff) when the connection drops, and asks for a fresh token when the server
   * closes it for an expired or refused one. Returns a function that stops watching.
   */
  watchProgress(flowKey: string, handlers: ProgressHandlers, scope?: Scope): () => void;
  /** Closes the websocket, if one is open. */
  dispose(): Promise<void>;
}

/** The websocket close code onramp sends for a refused or expired token. */
const TOKEN_REFUSED = 4403;

export function createClient(options: ClientOptions): OnrampClient {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const wsUrl = options.wsUrl ?? defaultWsUrl(options.url);
  const printed = new Map<DocumentNode, string>();
  let socket: WsClient | undefined;
  let refreshSocketToken = false;

  function text(document: DocumentNode): string {
    let query = printed.get(document);
    if (query === undefined) {
      query = print(document);
      printed.set(document, query);
    }
    return query;
  }

  async function post<R, V>(document: TypedDocumentNode<R, V>, variables: V, refresh = false): Promise<R> {
    const token = await options.token({ refresh });
    const response = await doFetch(options.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query: text(document), variables }),
    });
    let body: { data?: R | null; errors?: GraphQLErrorItem[] };
    try {
      body = (await response.json()) as typeof body;
    } catch {
      throw new OnrampError([], response.status);
    }
    if (body.errors && body.errors.length > 0) {
      const error = new OnrampError(body.errors, response.status);
      if (error.code === 'UNAUTHENTICATED' && !refresh) {
        return post(document, variables, true);
      }
      throw error;
    }
    if (body.data == null) {
      throw new OnrampError([], response.status);
    }
    return body.data;
  }

  function ws(): WsClient {
    socket ??= createWsClient({
      url: wsUrl,
      webSocketImpl: options.webSocketImpl,
      lazy: true,
      // Read on every (re)connection, so an expired token is replaced.
      connectionParams: async () => {
        const refresh = refreshSocketToken;
        refreshSocketToken = false;
        return { authorization: `Bearer ${await options.token({ refresh })}` };
      },
      // Live progress should survive restarts, deploys and token expiry: always retry.
      retryAttempts: Number.POSITIVE_INFINITY,
      shouldRetry: () => true,
      on: {
        closed: (event) => {
          if ((event as { code?: number } | undefined)?.code === TOKEN_REFUSED) {
            refreshSocketToken = true;
          }
        },
      },
    });
    return socket;
  }

  return {
    async status(flowKey, scope = {}) {
      return (await post(StatusDocument, { flowKey, workspaceId: scope.workspaceId })).status;
    },
    async completeStep(flowKey, stepKey, options = {}) {
      const variables = { flowKey, stepKey, metadata: options.metadata, workspaceId: options.workspaceId };
      return (await post(CompleteStepDocument, variables)).completeStep;
    },
    async skipStep(flowKey, stepKey, options = {}) {
      const variables = { flowKey, stepKey, reason: options.reason, workspaceId: options.workspaceId };
      return (await post(SkipStepDocument, variables)).skipStep;
    },
    async trackEvents(events) {
      return (await post(TrackEventsDocument, { events })).trackEvents;
    },
    watchProgress(flowKey, handlers, scope = {}) {
      return ws().subscribe(
        { query: text(WatchProgressDocument), variables: { flowKey, workspaceId: scope.workspaceId } },
        {
          next: (result) => {
            if (result.errors && result.errors.length > 0) {
              handlers.error?.(new OnrampError(result.errors as GraphQLErrorItem[]));
            } else if (result.data) {
              handlers.next((result.data as { onboardingProgress: OnboardingStatus }).onboardingProgress);
            }
          },
          error: (error) => handlers.error?.(error),
          complete: () => {},
        },
      );
    },
    async dispose() {
      await socket?.dispose();
      socket = undefined;
    },
  };
}

function defaultWsUrl(url: string): string {
  const ws = new URL(url);
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
  ws.pathname = `${ws.pathname.replace(/\/$/, '')}/ws`;
  return ws.toString();
}
