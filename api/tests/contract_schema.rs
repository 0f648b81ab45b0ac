//! The schema keeps every name, argument, type and nullability of the contract's SDL
//! (`CONTRACT.md`, copied below). Additions are allowed; renames and type changes fail here.

use std::collections::BTreeMap;

use mmsub_api::schema::{MutationRoot, QueryRoot, SubscriptionRoot};

const CONTRACT_SDL: &str = r#"
scalar GenericScalar          # any JSON value

input PageType {
  pageSize: Int               # default 10
  pageNumber: Int             # userList and channelList: 1-based (default 1); getMessageList: 0-based, 0 = newest page (default 0)
}

type UserQueryType { id: ID! username: String! email: String! isStaff: Boolean! }
type UserListType { data: [UserQueryType] pageCount: Int count: Int }

type MessageQueryType {
  id: String
  message: String             # "Welcome" for posts of type system_join_team
  createAt: String            # ISO-8601 with offset, in the server's TIME_ZONE (default UTC)
  owner: UserQueryType        # the author
  type: String                # "str" for a plain text post, else the Mattermost post type
}
type MessageListType { data: [MessageQueryType] hasNext: Boolean hasPrevious: Boolean }

type ChannelQueryType { channelId: String channelName: String lastMessage: MessageQueryType }
type ChannelListType { data: [ChannelQueryType] hasNext: Boolean }

type ResponseBase { status: String statusCode: Int message: String metadata: GenericScalar }
type ResponseWithToken {
  status: String statusCode: Int message: String
  token: String refreshToken: String metadata: GenericScalar   # metadata: {id, username, email}
}
union ResponseUnion = ResponseWithToken | ResponseBase

type ObtainJSONWebToken { payload: GenericScalar! refreshExpiresIn: Int! token: String! }
type Verify { payload: GenericScalar! }
type Refresh { payload: GenericScalar! refreshExpiresIn: Int! token: String! }

type OnNewChatMessage { channelIdentifier: String message: MessageQueryType }

type Query {
  userList(page: PageType): UserListType                                   # (auth)
  channelList(page: PageType): ChannelListType                             # (auth) the caller's channels, each with its last message
  getMessageList(channelIdentifier: String!, page: PageType): MessageListType   # (auth) oldest first within the page
}

type Mutation {
  userCreate(username: String!, password: String!, email: String!): ResponseBase
  userGetToken(username: String!, password: String!): ResponseUnion        # ResponseWithToken, or ResponseBase with statusCode 404 "Login Failed!"
  tokenAuth(username: String!, password: String!): ObtainJSONWebToken
  verifyToken(token: String): Verify
  refreshToken(token: String): Refresh
  textMessageSend(channelIdentifier: String!, textMessage: String!): ResponseBase   # (auth) metadata {"message_id"}
  channelCreate(channelName: String!, members: [String]!): ResponseBase          # (auth) metadata {"channel_id"}; members are usernames; the caller joins too
}

type Subscription {
  onNewChatMessage(channelIdentifier: String!): OnNewChatMessage          # (auth)
}
"#;

/// Type name → (field name → "(args):Type" with all whitespace removed); unions and scalars
/// map to their normalized definition under the key "=".
fn parse(sdl: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let without_descriptions = sdl.split("\"\"\"").step_by(2).collect::<String>();
    let text: String = without_descriptions
        .lines()
        .map(|line| line.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut types = BTreeMap::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        rest = &rest[start..];
        let keyword: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        rest = rest[keyword.len()..].trim_start();
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '@')
            .collect();
        rest = &rest[name.len()..];
        match keyword.as_str() {
            "type" | "input" => {
                let open = rest.find('{').unwrap();
                let close = rest.find('}').unwrap();
                types.insert(name, fields(&rest[open + 1..close]));
                rest = &rest[close + 1..];
            }
            "union" => {
                let end = rest.find('\n').unwrap_or(rest.len());
                let members: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
                types.insert(name, BTreeMap::from([("=".to_owned(), members)]));
                rest = &rest[end..];
            }
            "scalar" => {
                types.insert(name, BTreeMap::new());
            }
            _ => {
                let end = rest.find(['\n', '}']).map_or(rest.len(), |i| i + 1);
                rest = &rest[end..];
            }
        }
    }
    types
}

fn fields(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !(chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
            continue;
        }
        let name: String = chars[i..]
            .iter()
            .take_while(|c| c.is_alphanumeric() || **c == '_')
            .collect();
        i += name.len();
        let mut signature = String::new();
        let mut depth = 0;
        let mut seen_colon = false;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ':' if depth == 0 => seen_colon = true,
                c if c.is_whitespace()
                    && depth == 0
                    && seen_colon
                    && signature.ends_with(|l: char| l != ':') =>
                {
                    break
                }
                _ => {}
            }
            if !c.is_whitespace() {
                signature.push(c);
            }
            i += 1;
        }
        out.insert(name, signature);
    }
    out
}

/// The schema this crate serves, parsed like the contract.
fn served() -> BTreeMap<String, BTreeMap<String, String>> {
    parse(
        &async_graphql::Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
            .finish()
            .sdl(),
    )
}

/// Splits `(a:T,b:U):R` into its arguments and its type.
fn split_signature(signature: &str) -> (Vec<(String, String)>, String) {
    let (args, ty) = match signature.strip_prefix('(') {
        Some(rest) => {
            let close = rest.find(')').expect("balanced arguments");
            (&rest[..close], &rest[close + 1..])
        }
        None => ("", signature),
    };
    let args = args
        .split(',')
        .filter(|a| !a.is_empty())
        .map(|a| {
            let (name, ty) = a.split_once(':').expect("name:Type");
            (name.to_owned(), ty.to_owned())
        })
        .collect();
    (args, ty.trim_start_matches(':').to_owned())
}

#[test]
fn every_contract_signature_is_served_unchanged() {
    let ours = served();
    let contract = parse(CONTRACT_SDL);
    assert_eq!(
        contract.len(),
        18,
        "the contract parses into its 18 named types"
    );
    assert_eq!(contract["Mutation"].len(), 7);
    assert_eq!(contract["Query"].len(), 3);
    assert_eq!(contract["UserQueryType"]["isStaff"], ":Boolean!");
    for (type_name, contract_fields) in &contract {
        let served = ours
            .get(type_name)
            .unwrap_or_else(|| panic!("type {type_name} is missing"));
        for (field, signature) in contract_fields {
            let served_signature = served
                .get(field)
                .unwrap_or_else(|| panic!("{type_name}.{field} is missing"));
            let (contract_args, contract_type) = split_signature(signature);
            let (served_args, served_type) = split_signature(served_signature);
            assert_eq!(served_type, contract_type, "{type_name}.{field}: type");
            for (name, ty) in &contract_args {
                let served_ty = served_args.iter().find(|(n, _)| n == name).map(|(_, t)| t);
                assert_eq!(served_ty, Some(ty), "{type_name}.{field}({name}): argument");
            }
            for (name, ty) in &served_args {
                if !contract_args.iter().any(|(n, _)| n == name) {
                    assert!(
                        !ty.ends_with('!'),
                        "{type_name}.{field}: an added argument {name} must be optional"
                    );
                }
            }
        }
    }
}

#[test]
fn additions_beyond_the_contract_are_the_documented_ones() {
    let ours = served();
    assert_eq!(
        ours["Mutation"]["refreshToken"],
        "(token:String,refreshToken:String):Refresh"
    );
    assert_eq!(
        ours["Subscription"]["onNewChatMessage"],
        "(channelIdentifier:String!,afterMessageId:String):OnNewChatMessage"
    );
}

#[test]
fn the_subscription_contract_names_the_schemas_own_field_and_arguments() {
    use mmsub_api::subscription_contract::{CHANNEL_ARGUMENT, RESUME_ARGUMENT, ROOT_FIELD};
    let ours = served();
    let subscription = &ours["Subscription"];
    assert_eq!(
        subscription.len(),
        1,
        "one subscription field: {subscription:?}"
    );
    let (args, _) = split_signature(&subscription[ROOT_FIELD]);
    let names: Vec<&str> = args.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, [CHANNEL_ARGUMENT, RESUME_ARGUMENT]);
}

#[test]
fn the_costly_fields_the_cost_counter_is_told_of_are_the_schemas_own() {
    let ours = served();
    let roots = [&ours["Query"], &ours["Mutation"]];
    let signature = |field: &str| {
        roots
            .iter()
            .find_map(|fields| fields.get(field))
            .unwrap_or_else(|| panic!("{field} is not a root field"))
            .clone()
    };
    for field in mmsub_api::schema::FIELD_COSTS.paged {
        let (args, _) = split_signature(&signature(field));
        assert!(
            args.iter()
                .any(|(name, ty)| name == "page" && ty == "PageType"),
            "{field} takes page: PageType"
        );
    }
    for field in mmsub_api::schema::FIELD_COSTS.password_checks {
        let (args, _) = split_signature(&signature(field));
        assert!(
            args.iter().any(|(name, _)| name == "password"),
            "{field} takes a password"
        );
    }
}
