"""AWS: the one place that knows how orderpipe talks to AWS.

Typed settings from the environment, the client factory, the stack's names, timings and table
shapes (shared by the template tests and the local stack), the stack-output reader and the
DynamoDB JSON encoder. It imports only boto3/botocore and the standard library: every other
package may import it.
"""
