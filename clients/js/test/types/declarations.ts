// The declarations (index.d.ts) checked against the sources (src/, typed by their JSDoc), by tsc in
// `npm test`: every export of the sources is declared, every declared value exists, and each
// implementation is assignable to its declaration (so a changed signature fails here, not in users' code).

import * as implementation from "../../src/index.js";
import type * as declared from "../../index.js";

type Undeclared = Exclude<keyof typeof implementation, keyof typeof declared>;
type Unimplemented = Exclude<keyof typeof declared, keyof typeof implementation>;

/** `true` only when `T` is never; otherwise the error names what is left over. */
type Nothing<T> = [T] extends [never] ? true : `left over: ${T & string}`;

/** The declared names whose implementation does not fit the declaration (all of them at once). */
type Mismatched = {
  [K in keyof typeof declared & keyof typeof implementation]: (typeof implementation)[K] extends (typeof declared)[K]
    ? never
    : K;
}[keyof typeof declared & keyof typeof implementation];

export const noMismatch: Nothing<Mismatched> = true;
export const everyExportDeclared: Nothing<Undeclared> = true;
export const everyDeclarationImplemented: Nothing<Unimplemented> = true;
export const implementationsMatch: typeof declared = implementation;

// Each class apart, so that a mismatch is explained member by member.
declare function fits<T>(value: T): void;
declare const impl: {
  client: implementation.Client;
  task: implementation.Task;
  workflow: implementation.Workflow;
  httpError: implementation.HttpError;
  taskFailed: implementation.TaskFailedError;
  subscription: implementation.SubscriptionError;
  closed: implementation.ConnectionClosedError;
  estimator: implementation.EtaEstimator;
};
fits<declared.Client>(impl.client);
fits<declared.Task>(impl.task);
fits<declared.Workflow>(impl.workflow);
fits<declared.HttpError>(impl.httpError);
fits<declared.TaskFailedError>(impl.taskFailed);
fits<declared.SubscriptionError>(impl.subscription);
fits<declared.ConnectionClosedError>(impl.closed);
fits<declared.EtaEstimator>(impl.estimator);

// And the other way: every public member of a class (not `_`-prefixed) is declared.
type Public<T> = Exclude<keyof T, `_${string}`>;
type UndeclaredMembers =
  | Exclude<Public<implementation.Client>, keyof declared.Client>
  | Exclude<Public<implementation.Task>, keyof declared.Task>
  | Exclude<Public<implementation.Workflow>, keyof declared.Workflow>
  | Exclude<Public<implementation.HttpError>, keyof declared.HttpError>
  | Exclude<Public<implementation.TaskFailedError>, keyof declared.TaskFailedError>
  | Exclude<Public<implementation.TaskRevokedError>, keyof declared.TaskRevokedError>
  | Exclude<Public<implementation.SubscriptionError>, keyof declared.SubscriptionError>
  | Exclude<Public<implementation.ConnectionClosedError>, keyof declared.ConnectionClosedError>
  | Exclude<Public<implementation.EtaEstimator>, keyof declared.EtaEstimator>;
export const everyMemberDeclared: Nothing<UndeclaredMembers> = true;

// svc-client/react: react/index.js against react.d.ts.
import * as reactImplementation from "../../react/index.js";
import type * as reactDeclared from "../../react.js";

type ReactMismatched = {
  [K in keyof typeof reactDeclared & keyof typeof reactImplementation]: (typeof reactImplementation)[K] extends (typeof reactDeclared)[K]
    ? never
    : K;
}[keyof typeof reactDeclared & keyof typeof reactImplementation];
export const reactExportsDeclared: Nothing<Exclude<keyof typeof reactImplementation, keyof typeof reactDeclared>> = true;
export const reactDeclarationsImplemented: Nothing<Exclude<keyof typeof reactDeclared, keyof typeof reactImplementation>> = true;
export const reactNoMismatch: Nothing<ReactMismatched> = true;
export const reactImplementationsMatch: typeof reactDeclared = reactImplementation;
